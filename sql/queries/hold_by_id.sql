-- One hold, with its items, for its customer ($2): no row for anyone else's. A hold past
-- its expires_at is shown expired, as a confirmation would find it, even before the
-- holds actor has given its tickets back.
SELECT id, event_id, user_id, quantity,
       CASE WHEN status = 'held' AND expires_at <= now() THEN 'expired' ELSE status END
           AS status,
       total_cents, currency, hold_items_of(id) AS items, expires_at, booking_id, created_at
  FROM holds
 WHERE id = $1 AND user_id = $2
