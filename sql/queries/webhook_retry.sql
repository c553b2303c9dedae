-- Delivery $1 of endpoint $2 of organizer $3 is attempted again now, with a new
-- schedule (attempts count from zero again), whatever became of it before.
UPDATE webhook_deliveries d
   SET status = 'pending', next_attempt_at = now(), attempts = 0, finished_at = NULL
  FROM webhook_endpoints w
 WHERE d.id = $1 AND d.endpoint_id = $2 AND w.id = d.endpoint_id AND w.organizer_id = $3
RETURNING d.*
