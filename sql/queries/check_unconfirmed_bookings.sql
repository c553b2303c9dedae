-- Bookings still waiting for their confirmation mail $1 seconds after they were made.
SELECT id, event_id, user_id, created_at, confirmation_status
  FROM bookings
 WHERE confirmation_status = 'pending'
   AND created_at < now() - make_interval(secs => $1)
 ORDER BY created_at
 LIMIT $2
