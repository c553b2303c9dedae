-- Recorded before it is sent (sent_at NULL): the unique (hold_id, kind) key makes a
-- redelivered message find this row instead of writing a second one.
INSERT INTO notifications (user_id, kind, event_id, hold_id, recipient, subject, body)
VALUES ($1, 'waitlist_offer', $2, $3, $4, $5, $6)
ON CONFLICT (hold_id, kind) WHERE hold_id IS NOT NULL DO NOTHING
RETURNING id, recipient, subject, body, sent_at
