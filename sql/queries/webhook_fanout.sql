-- One delivery of message $3 (event type $4, body $5, written at $6) for each endpoint
-- of organizer $1 that wants it: the type, and event $2 when it names events. An
-- endpoint made after the change does not get it. A message seen again (redelivered by
-- the stream) adds nothing. Returns the deliveries made.
INSERT INTO webhook_deliveries (endpoint_id, message_id, event_type, body, occurred_at,
                                next_attempt_at)
SELECT w.id, $3, $4, $5, $6, now()
  FROM webhook_endpoints w
 WHERE w.organizer_id = $1
   AND ($4 = ANY (w.event_types) OR '*' = ANY (w.event_types))
   AND (w.event_ids IS NULL OR $2 = ANY (w.event_ids))
   AND w.created_at <= $6
ON CONFLICT (endpoint_id, message_id) DO NOTHING
RETURNING id
