UPDATE webhook_endpoints SET pause_notified_at = now() WHERE id = $1 AND paused_at = $2
