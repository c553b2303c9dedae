-- Decide the requests in the arrays (one element per request, in arrival order, then
-- their items): one row per request, in the same order. $10 is how long a hold lasts,
-- $11 bounds the wait for an event's lock.
SELECT outcome, available, allowed, ticket_type_id, id, event_id, user_id, quantity, status,
       total_cents, currency, items, created_at, confirmation_status, confirmed_at,
       payment_reference, hold_id, expires_at, booking_id
  FROM book_tickets($1::uuid[], $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
