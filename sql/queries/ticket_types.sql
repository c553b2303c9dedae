-- An event's ticket types in the order they were added, or only the one $2 (NULL: all),
-- each with the tickets left under its quota and the event's capacity alike, and
-- whether it can be booked now.
SELECT t.id, t.event_id, t.name, t.price_cents, e.currency, t.quota, t.sales_start,
       t.sales_end, t.max_per_booking, t.status, t.created_at, t.updated_at,
       t.waiting AS waitlist_length, t.waitlist_allow_skip,
       CASE WHEN e.status = 'cancelled' THEN 0
            ELSE least(t.quota - t.taken, e.available_tickets) END AS available_tickets,
       e.status = 'scheduled' AND e.starts_at > now() AND t.status = 'on_sale'
           AND coalesce(t.sales_start <= now(), true) AND coalesce(t.sales_end > now(), true)
           AS on_sale
  FROM ticket_types t JOIN events e ON e.id = t.event_id
 WHERE t.event_id = $1 AND ($2::uuid IS NULL OR t.id = $2)
 ORDER BY t.created_at, t.id
