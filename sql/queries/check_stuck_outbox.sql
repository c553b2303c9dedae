-- Outbox rows the relay has not moved to Redis for longer than $1 seconds.
SELECT id, topic, kind, request_id, created_at,
       round(extract(epoch FROM now() - created_at)::numeric, 1) AS age_seconds
  FROM outbox
 WHERE created_at < now() - make_interval(secs => $1)
 ORDER BY id
 LIMIT $2
