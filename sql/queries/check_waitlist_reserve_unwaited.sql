-- Ticket types keeping tickets reserved for their waiting list while nobody waits:
-- those tickets are off sale for no one.
SELECT t.id, t.event_id, t.name, t.reserved
  FROM ticket_types t
 WHERE t.reserved > 0
   AND NOT EXISTS (SELECT FROM waitlist_entries w
                    WHERE w.ticket_type_id = t.id AND w.status = 'waiting')
 ORDER BY t.event_id, t.id
 LIMIT $1
