-- How many attendees a change is for. $1 event, $2 kind, $3 changed_at.
SELECT count(DISTINCT b.user_id)
  FROM bookings b
 WHERE b.event_id = $1
   AND CASE WHEN $2 = 'event_cancelled'
            THEN b.status = 'cancelled' AND b.cancel_reason = 'event_cancelled'
            ELSE b.status = 'confirmed' END
   AND b.created_at <= $3
