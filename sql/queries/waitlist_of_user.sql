-- A customer's waiting-list entries, newest first: the first page of $2 rows (shown as
-- waitlist_entry shows one).
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
 WHERE w.user_id = $1
 ORDER BY w.created_at DESC, w.id DESC
 LIMIT $2
