-- Recorded before it is sent (sent_at NULL): the unique (booking_id, kind) key makes a
-- redelivered message find this row instead of writing a second one.
INSERT INTO notifications (user_id, kind, event_id, booking_id, recipient, subject, body)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (booking_id, kind) WHERE booking_id IS NOT NULL DO NOTHING
RETURNING id, recipient, subject, body, sent_at
