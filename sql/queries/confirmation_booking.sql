-- The booking, and its mail of this kind if one was recorded already (a redelivery).
SELECT b.id, b.event_id, b.user_id, b.quantity, u.email, u.name,
       e.title, e.starts_at, e.venue,
       n.id AS note_id, n.recipient, n.subject, n.body, n.sent_at
  FROM bookings b
  JOIN users u ON u.id = b.user_id
  JOIN events e ON e.id = b.event_id
  LEFT JOIN notifications n ON n.booking_id = b.id AND n.kind = $2
 WHERE b.id = $1
