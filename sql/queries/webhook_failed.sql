SELECT outcome, paused
  FROM webhook_attempt_failed($1, $2, $3, $4, $5, $6)
