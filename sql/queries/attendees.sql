-- An event's confirmed bookings, oldest first: the first page of $2 rows.
SELECT b.id AS booking_id, b.user_id, u.name, u.email, b.quantity,
       b.created_at AS booked_at, booking_items_of(b.id) AS items
  FROM bookings b JOIN users u ON u.id = b.user_id
 WHERE b.event_id = $1 AND b.status = 'confirmed'
 ORDER BY b.created_at, b.id
 LIMIT $2
