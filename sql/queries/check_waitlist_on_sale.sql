-- Ticket types the public can book while someone waits for them: every ticket of such a
-- type that comes back is offered, or kept reserved, before it is sold again
-- (offer_waitlist), so what book_tickets would find left of it is none.
SELECT t.id, t.event_id, t.name, t.quota, t.taken, t.reserved, t.waiting,
       least(coalesce(t.quota - t.taken, e.available_tickets), e.available_tickets)
           AS bookable
  FROM ticket_types t
  JOIN events e ON e.id = t.event_id
 WHERE t.id IN (SELECT w.ticket_type_id FROM waitlist_entries w WHERE w.status = 'waiting')
   AND e.status = 'scheduled' AND e.starts_at > now()
   AND t.status = 'on_sale' AND coalesce(t.sales_start <= now(), true)
   AND coalesce(t.sales_end > now(), true)
   AND least(coalesce(t.quota - t.taken, e.available_tickets), e.available_tickets) > 0
 ORDER BY t.event_id, t.id
 LIMIT $1
