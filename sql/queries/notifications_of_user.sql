-- The mails sent to a user, newest first: the first page of $2 rows.
SELECT id, kind, event_id, booking_id, hold_id, subject, body, created_at, sent_at
  FROM notifications
 WHERE user_id = $1 AND sent_at IS NOT NULL
 ORDER BY created_at DESC, id DESC
 LIMIT $2
