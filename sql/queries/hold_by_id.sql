-- One hold, with its items, for its customer ($2): no row for anyone else's.
SELECT id, event_id, user_id, quantity, status, total_cents, currency,
       hold_items_of(id) AS items, expires_at, booking_id, created_at
  FROM holds
 WHERE id = $1 AND user_id = $2
