-- One booking and its event's organizer, who may read it too.
SELECT b.id, b.event_id, b.user_id, b.quantity, b.status, b.confirmation_status,
       b.confirmed_at, b.created_at, b.total_cents, b.currency, b.payment_reference,
       b.hold_id, booking_items_of(b.id) AS items, e.organizer_id
  FROM bookings b JOIN events e ON e.id = b.event_id
 WHERE b.id = $1
