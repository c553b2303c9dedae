-- One booking as its representation shows it.
SELECT id, event_id, user_id, quantity, status, confirmation_status, confirmed_at, created_at,
       total_cents, currency, payment_reference, hold_id, booking_items_of(id) AS items
  FROM bookings
 WHERE id = $1
