-- A customer's bookings, newest first: the first page of $2 rows.
SELECT id, event_id, user_id, quantity, status, confirmation_status, confirmed_at, created_at,
       total_cents, currency, payment_reference, hold_id, booking_items_of(id) AS items
  FROM bookings
 WHERE user_id = $1
 ORDER BY created_at DESC, id DESC
 LIMIT $2
