-- A webhook.ping delivery to endpoint $1 of organizer $2, due now.
INSERT INTO webhook_deliveries (endpoint_id, message_id, event_type, body, occurred_at,
                                next_attempt_at)
SELECT w.id, $3, 'webhook.ping', $4, $5, now()
  FROM webhook_endpoints w
 WHERE w.id = $1 AND w.organizer_id = $2
RETURNING *
