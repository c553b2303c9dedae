-- Deliveries of enabled endpoints due for longer than $1 seconds: the dispatchers are
-- not keeping up, or none runs. (An attempt in flight is not due: its lease is ahead.)
-- $2 at most this many, longest due first.
SELECT d.id, d.endpoint_id, d.message_id, d.event_type, d.attempts, d.next_attempt_at,
       round(extract(epoch FROM now() - d.next_attempt_at)::numeric, 1)::float8
           AS due_seconds
  FROM webhook_endpoints w
  JOIN webhook_deliveries d ON d.endpoint_id = w.id AND d.status = 'pending'
                           AND d.next_attempt_at < now() - make_interval(secs => $1)
 WHERE w.status = 'enabled'
 ORDER BY d.next_attempt_at, d.id
 LIMIT $2
