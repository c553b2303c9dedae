-- The mails sent to a user, newest first: the $2 rows after the cursor ($3, $4).
SELECT id, kind, event_id, booking_id, hold_id, subject, body, created_at, sent_at
  FROM notifications
 WHERE user_id = $1 AND sent_at IS NOT NULL AND (created_at, id) < ($3, $4)
 ORDER BY created_at DESC, id DESC
 LIMIT $2
