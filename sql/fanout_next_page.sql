-- The next page of attendees to tell about a change: distinct users, keyset on user id.
-- $1 event, $2 kind, $3 changed_at, $4 after this user (NULL: from the start), $5 page size.
SELECT DISTINCT b.user_id
  FROM bookings b
 WHERE b.event_id = $1
   AND CASE WHEN $2 = 'event_cancelled'
            THEN b.status = 'cancelled' AND b.cancel_reason = 'event_cancelled'
            ELSE b.status = 'confirmed' END
   AND b.created_at <= $3
   AND ($4::uuid IS NULL OR b.user_id > $4)
 ORDER BY b.user_id
 LIMIT $5
