-- Endpoints paused for failing more than $1 seconds ago whose owner was not mailed
-- about it (the endpoint.paused message was lost or its mail failed). $2 at most this
-- many, oldest first.
SELECT w.id, w.organizer_id, w.url, w.paused_at, w.consecutive_failures
  FROM webhook_endpoints w
 WHERE w.paused_reason = 'failing' AND w.pause_notified_at IS NULL
   AND w.paused_at < now() - make_interval(secs => $1)
 ORDER BY w.paused_at, w.id
 LIMIT $2
