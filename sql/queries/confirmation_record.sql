-- Recorded before they are sent (sent_at NULL), one row per (booking, kind) given in
-- parallel arrays (user $1, kind $2, event $3, booking $4, recipient $5, subject $6,
-- body $7): the unique (booking_id, kind) key makes a redelivered message find its row
-- instead of writing a second one. Returns the rows written; a pair already recorded
-- (by a twin of the message) returns nothing here and is read with
-- confirmation_recorded.
INSERT INTO notifications (user_id, kind, event_id, booking_id, recipient, subject, body)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::text[],
                     $6::text[], $7::text[])
ON CONFLICT (booking_id, kind) WHERE booking_id IS NOT NULL DO NOTHING
RETURNING id, booking_id, kind, recipient, subject, body, sent_at
