-- Put the webhooks messages of changes back in the outbox, as the stored procedures
-- write them, dated when the change happened (the fan-out dates the webhook and picks
-- the endpoints by it). $1 their types, $2 their outbox payloads, $3 when each change
-- happened, $4 the endpoint that misses each (by webhook-id $5), $6 the request id of
-- each. One whose delivery to that endpoint was made since it was found is skipped: the
-- check and the insert are one statement.
INSERT INTO outbox (topic, kind, payload, request_id, created_at)
SELECT 'webhooks', r.kind, r.payload, r.request_id, r.changed_at
  FROM unnest($1::text[], $2::jsonb[], $3::timestamptz[], $4::uuid[], $5::text[],
              $6::text[]) WITH ORDINALITY
       AS r (kind, payload, changed_at, endpoint_id, message_id, request_id, n)
 WHERE NOT EXISTS (SELECT FROM webhook_deliveries d
                    WHERE d.endpoint_id = r.endpoint_id AND d.message_id = r.message_id)
 ORDER BY r.n
RETURNING kind, payload, request_id
