-- Take up to $1 due deliveries of enabled endpoints for attempts now, at most $4 per
-- endpoint counting those this dispatcher has in flight ($2 endpoints, $3 how many).
-- Each taken delivery's next_attempt_at becomes its lease ($5 seconds): should the
-- attempt's result never be recorded (its worker died), it is due again then.
-- Endpoints are visited in random order, so no endpoint's backlog keeps others waiting;
-- SKIP LOCKED lets several dispatchers take disjoint deliveries. Committed without
-- waiting for the WAL flush (see webhook_succeeded.sql): a claim lost in a crash leaves
-- the delivery due, to be taken again.
WITH quick AS (
    SELECT set_config('synchronous_commit', 'off', true)
), busy AS (
    SELECT * FROM unnest($2::uuid[], $3::integer[]) AS b (endpoint_id, in_flight)
), picked AS (
    SELECT d.id
      FROM (SELECT w.id FROM webhook_endpoints w WHERE w.status = 'enabled'
             ORDER BY random()) w
      LEFT JOIN busy b ON b.endpoint_id = w.id
     CROSS JOIN LATERAL (
        SELECT d.id FROM webhook_deliveries d
         WHERE d.endpoint_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= now()
         ORDER BY d.next_attempt_at
         LIMIT greatest($4 - coalesce(b.in_flight, 0), 0)
         FOR UPDATE SKIP LOCKED) d
     LIMIT $1
)
UPDATE webhook_deliveries d
   SET next_attempt_at = now() + make_interval(secs => $5), attempts = d.attempts + 1,
       last_attempt_at = now()
  FROM picked p, webhook_endpoints w, quick
 WHERE d.id = p.id AND w.id = d.endpoint_id
RETURNING d.id, d.endpoint_id, d.message_id, d.event_type, d.body, d.attempts, w.url,
          w.secret,
          CASE WHEN w.previous_secret_until > now() THEN w.previous_secret END
              AS previous_secret
