-- Webhook deliveries pending (through the partial index of pending ones: those done are
-- never read), those due now for enabled endpoints, how long the oldest of those has
-- been due, those failed (given up on, through their own partial index), and the
-- endpoints paused by reason.
SELECT (SELECT count(*) FROM webhook_deliveries d WHERE d.status = 'pending') AS pending,
       count(d.id) AS due,
       coalesce(extract(epoch FROM now() - min(d.next_attempt_at)), 0)::float8
           AS oldest_due_seconds,
       (SELECT count(*) FROM webhook_deliveries d WHERE d.status = 'failed') AS failed,
       (SELECT count(*) FROM webhook_endpoints w
         WHERE w.paused_reason = 'owner') AS paused_by_owner,
       (SELECT count(*) FROM webhook_endpoints w
         WHERE w.paused_reason = 'failing') AS paused_failing
  FROM webhook_endpoints w
  JOIN webhook_deliveries d ON d.endpoint_id = w.id AND d.status = 'pending'
                           AND d.next_attempt_at <= now()
 WHERE w.status = 'enabled'
