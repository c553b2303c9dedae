SELECT id, recipient, subject, body, sent_at FROM notifications
 WHERE booking_id = $1 AND kind = $2
