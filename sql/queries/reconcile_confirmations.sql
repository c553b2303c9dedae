-- Bookings still waiting for their confirmation mail $1 seconds after they were made,
-- with no booking_confirmed outbox row that would send it: the reconciler's candidates
-- (it then looks for their message in Redis). $2 at most this many, oldest first.
SELECT b.id AS booking_id, b.event_id, b.created_at
  FROM bookings b
 WHERE b.confirmation_status = 'pending'
   AND b.created_at < now() - make_interval(secs => $1)
   AND NOT EXISTS (SELECT 1 FROM outbox o
                    WHERE o.topic = 'confirmations' AND o.kind = 'booking_confirmed'
                      AND o.payload ->> 'booking_id' = b.id::text)
 ORDER BY b.created_at, b.id
 LIMIT $2
