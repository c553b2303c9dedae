-- Endpoint $1 paused for failing at $2 (to the microsecond), with its owner, unless its
-- owner was told already or it was enabled again since.
SELECT w.id, w.url, w.consecutive_failures, w.failing_since, w.paused_at, u.email, u.name
  FROM webhook_endpoints w JOIN users u ON u.id = w.organizer_id
 WHERE w.id = $1 AND w.status = 'paused' AND w.paused_reason = 'failing'
   AND w.paused_at = $2 AND w.pause_notified_at IS NULL
