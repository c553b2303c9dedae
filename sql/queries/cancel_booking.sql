SELECT c.outcome, (c.booking).id, (c.booking).event_id, (c.booking).user_id,
       (c.booking).quantity, (c.booking).status, (c.booking).confirmation_status,
       (c.booking).confirmed_at, (c.booking).created_at, (c.booking).total_cents,
       (c.booking).currency, (c.booking).payment_reference, (c.booking).hold_id,
       booking_items_of((c.booking).id) AS items
  FROM cancel_booking($1, $2, $3) c
