-- Decide the requests in the arrays (one element per request, in arrival order): one
-- row per request, in the same order. $7 bounds the wait for an event's lock.
SELECT outcome, available, allowed, id, event_id, user_id, quantity, status,
       confirmation_status, confirmed_at, created_at
  FROM book_tickets($1::uuid[], $2, $3, $4, $5, $6, $7)
