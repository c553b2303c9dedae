-- For each (booking $1, kind $2) pair (parallel arrays): the booking, and its mail of
-- that kind if one was recorded already (a redelivery). A booking that is gone has no row.
SELECT m.kind, b.id, b.event_id, b.user_id, b.quantity, u.email, u.name,
       e.title, e.starts_at, e.venue,
       n.id AS note_id, n.recipient, n.subject, n.body, n.sent_at
  FROM unnest($1::uuid[], $2::text[]) AS m (booking_id, kind)
  JOIN bookings b ON b.id = m.booking_id
  JOIN users u ON u.id = b.user_id
  JOIN events e ON e.id = b.event_id
  LEFT JOIN notifications n ON n.booking_id = b.id AND n.kind = m.kind
