-- One statement, so one commit: the mail is stamped sent and, for a confirmation, the
-- booking with it.
WITH sent AS (
    UPDATE notifications SET sent_at = now() WHERE id = $1 AND sent_at IS NULL
)
UPDATE bookings SET confirmation_status = 'sent', confirmed_at = now()
 WHERE id = $2 AND $3 = 'booking_confirmed' AND confirmation_status <> 'sent'
