-- Confirm the holds in the arrays ($1 holds, $2 their customers, $3 payment references,
-- $4 request ids): one row per hold, in the same order. $5 bounds the wait for a lock.
SELECT c.outcome, (c.booking).id, (c.booking).event_id, (c.booking).user_id,
       (c.booking).quantity, (c.booking).status, (c.booking).confirmation_status,
       (c.booking).confirmed_at, (c.booking).created_at, (c.booking).total_cents,
       (c.booking).currency, (c.booking).payment_reference, (c.booking).hold_id, c.items
  FROM confirm_holds($1::uuid[], $2, $3, $4, $5) c
 ORDER BY c.n
