-- For each message (organizer $1, event $2, webhook-id $3, event type $4, body $5, when
-- the change happened $6; parallel arrays), one delivery for each endpoint of the
-- organizer that wants it: the type, and the event when the endpoint names events. An
-- endpoint made after the change does not get it. A message seen again (redelivered by
-- the stream) adds nothing. Returns the webhook-id of each delivery made.
INSERT INTO webhook_deliveries (endpoint_id, message_id, event_type, body, occurred_at,
                                next_attempt_at)
SELECT w.id, m.message_id, m.kind, m.body, m.occurred_at, now()
  FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
              $6::timestamptz[]) AS m (organizer_id, event_id, message_id, kind, body,
                                      occurred_at)
  JOIN webhook_endpoints w
    ON w.organizer_id = m.organizer_id
   AND (m.kind = ANY (w.event_types) OR '*' = ANY (w.event_types))
   AND (w.event_ids IS NULL OR m.event_id = ANY (w.event_ids))
   AND w.created_at <= m.occurred_at
ON CONFLICT (endpoint_id, message_id) DO NOTHING
RETURNING message_id
