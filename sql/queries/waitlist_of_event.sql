-- An event's waiting list in the order of joining, optionally of one type ($3) and in one
-- status ($4): the $2 entries after the cursor $5 (0: from the start). position, for a
-- waiting entry, is its place in its type's queue: the waiting entries of the type
-- before the page, counted once per type, plus its rank within the page.
WITH page AS (
    SELECT w.* FROM waitlist_entries w
     WHERE w.event_id = $1 AND ($3::uuid IS NULL OR w.ticket_type_id = $3)
       AND ($4::text IS NULL OR w.status = $4) AND w.seq > $5
     ORDER BY w.seq
     LIMIT $2
), ahead AS (
    SELECT t.ticket_type_id,
           (SELECT count(*) FROM waitlist_entries x
             WHERE x.ticket_type_id = t.ticket_type_id AND x.status = 'waiting'
               AND x.seq <= $5) AS n
      FROM (SELECT DISTINCT p.ticket_type_id FROM page p) t
)
SELECT p.id, p.seq, p.event_id, p.ticket_type_id, p.user_id, u.name, u.email, p.quantity,
       CASE WHEN p.status = 'offered' AND h.expires_at <= now() THEN 'expired'
            ELSE p.status END AS status,
       CASE WHEN p.status = 'waiting'
            THEN a.n + count(*) FILTER (WHERE p.status = 'waiting')
                       OVER (PARTITION BY p.ticket_type_id ORDER BY p.seq) END AS position,
       p.hold_id, h.expires_at AS offer_expires_at, p.created_at, p.offered_at, p.ended_at
  FROM page p
  JOIN users u ON u.id = p.user_id
  JOIN ahead a ON a.ticket_type_id = p.ticket_type_id
  LEFT JOIN holds h ON h.id = p.hold_id
 ORDER BY p.seq
