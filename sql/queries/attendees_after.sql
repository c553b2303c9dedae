-- An event's confirmed bookings, oldest first: the $2 rows after the cursor ($3, $4).
SELECT b.id AS booking_id, b.user_id, u.name, u.email, b.quantity,
       b.created_at AS booked_at, booking_items_of(b.id) AS items
  FROM bookings b JOIN users u ON u.id = b.user_id
 WHERE b.event_id = $1 AND b.status = 'confirmed' AND (b.created_at, b.id) > ($3, $4)
 ORDER BY b.created_at, b.id
 LIMIT $2
