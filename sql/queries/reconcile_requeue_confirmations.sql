-- Put the booking_confirmed message of bookings back in the outbox, as book_tickets
-- writes it. $1 bookings, $2 the request id of each. A booking confirmed (or given up
-- on) since it was found is skipped: the check and the insert are one statement.
INSERT INTO outbox (topic, kind, payload, request_id)
SELECT 'confirmations', 'booking_confirmed', jsonb_build_object('booking_id', b.id),
       r.request_id
  FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS r (booking_id, request_id, n)
  JOIN bookings b ON b.id = r.booking_id
 WHERE b.confirmation_status = 'pending'
 ORDER BY r.n
RETURNING (payload ->> 'booking_id')::uuid AS booking_id, request_id
