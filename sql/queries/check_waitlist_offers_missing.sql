-- Ticket types whose reserve would cover the next entry to offer, yet it waits: the
-- first waiting entry, or for a type that lets smaller entries skip ahead, the first
-- that fits. offer_waitlist keeps reserved only what is too little for it, and the
-- holds actor offers within a second what a type kept until its sales window opened.
SELECT t.id, t.event_id, t.name, t.reserved, t.waitlist_allow_skip,
       n.id AS entry_id, n.quantity AS entry_quantity
  FROM ticket_types t
 CROSS JOIN LATERAL (SELECT w.id, w.quantity FROM waitlist_entries w
                      WHERE w.ticket_type_id = t.id AND w.status = 'waiting'
                        AND (NOT t.waitlist_allow_skip OR w.quantity <= t.reserved)
                      ORDER BY w.seq
                      LIMIT 1) n
 WHERE t.reserved > 0 AND n.quantity <= t.reserved
   -- Before its sales window opens a type keeps what comes back without offering it.
   AND coalesce(t.sales_start <= now(), true)
 ORDER BY t.event_id, t.id
 LIMIT $1
