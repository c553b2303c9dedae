-- Offers whose hold is missing or says otherwise than its entry: offered is a live hold
-- (held), accepted a confirmed one, expired an expired one, declined (and cancelled
-- with its event after the offer) a released one.
SELECT w.id, w.event_id, w.status, w.hold_id, h.status AS hold_status,
       s.hold_status AS expected_hold_status
  FROM waitlist_entries w
  JOIN (VALUES ('offered', 'held'), ('accepted', 'confirmed'), ('expired', 'expired'),
               ('declined', 'released'), ('cancelled', 'released')) s (status, hold_status)
    ON s.status = w.status
  LEFT JOIN holds h ON h.id = w.hold_id
 WHERE (w.status <> 'cancelled' OR w.hold_id IS NOT NULL)
   AND h.status IS DISTINCT FROM s.hold_status
 ORDER BY w.event_id, w.seq
 LIMIT $1
