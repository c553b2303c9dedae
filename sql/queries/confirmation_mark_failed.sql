-- Never overwrite 'sent': a slower twin of the message may have succeeded.
UPDATE bookings SET confirmation_status = 'failed'
 WHERE id = $1 AND confirmation_status = 'pending'
