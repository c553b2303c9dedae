-- Holds $1 as their customers read them, with their event's organizer: the data of
-- their webhooks.
SELECT h.id, h.event_id, h.user_id, h.quantity, h.status, h.total_cents, h.currency,
       hold_items_of(h.id) AS items, h.expires_at, h.booking_id, h.created_at,
       e.organizer_id
  FROM holds h JOIN events e ON e.id = h.event_id
 WHERE h.id = ANY ($1::uuid[])
