-- Entries passed over: of a type that lets no one skip ahead, an entry still waiting
-- that joined before an entry holding an offer. Offers go in the order of joining.
SELECT w.id, w.event_id, w.ticket_type_id, w.seq, w.quantity,
       o.id AS offered_entry_id, o.seq AS offered_seq
  FROM waitlist_entries o
  JOIN ticket_types t ON t.id = o.ticket_type_id AND NOT t.waitlist_allow_skip
 CROSS JOIN LATERAL (SELECT x.id, x.event_id, x.ticket_type_id, x.seq, x.quantity
                       FROM waitlist_entries x
                      WHERE x.ticket_type_id = o.ticket_type_id AND x.status = 'waiting'
                        AND x.seq < o.seq
                      ORDER BY x.seq
                      LIMIT 1) w
 WHERE o.status = 'offered'
 ORDER BY o.event_id, o.seq
 LIMIT $1
