-- One waiting-list entry, for its customer ($2): no row for anyone else's. position is
-- its place among the type's waiting entries (1: next), while it waits; an offer past
-- its expires_at is shown expired, as a confirmation would find it, even before the
-- holds actor has moved the tickets on.
SELECT w.id, w.event_id, w.ticket_type_id, w.quantity,
       CASE WHEN w.status = 'offered' AND h.expires_at <= now() THEN 'expired'
            ELSE w.status END AS status,
       CASE WHEN w.status = 'waiting'
            THEN (SELECT count(*) FROM waitlist_entries x
                   WHERE x.ticket_type_id = w.ticket_type_id AND x.status = 'waiting'
                     AND x.seq < w.seq) + 1 END AS position,
       w.hold_id, h.expires_at AS offer_expires_at, w.created_at, w.offered_at, w.ended_at
  FROM waitlist_entries w
  LEFT JOIN holds h ON h.id = w.hold_id
 WHERE w.id = $1 AND w.user_id = $2
