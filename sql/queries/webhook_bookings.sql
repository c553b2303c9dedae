-- Bookings $1 as the API shows them, with their event's organizer: the data of their
-- webhooks.
SELECT b.id, b.event_id, b.user_id, b.quantity, b.status, b.confirmation_status,
       b.confirmed_at, b.created_at, b.total_cents, b.currency, b.payment_reference,
       b.hold_id, booking_items_of(b.id) AS items, e.organizer_id
  FROM bookings b JOIN events e ON e.id = b.event_id
 WHERE b.id = ANY ($1::uuid[])
