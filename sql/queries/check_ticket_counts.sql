-- Events whose remaining tickets disagree with their confirmed bookings, live holds and
-- what is reserved for the waiting list (a cancelled event has all its tickets back).
SELECT e.id, e.title, e.status, e.capacity, e.available_tickets,
       CASE WHEN e.status = 'cancelled' THEN e.capacity
            ELSE e.capacity - coalesce(b.sold, 0) - coalesce(h.held, 0) - r.reserved END AS expected_available
  FROM events e
  LEFT JOIN LATERAL (SELECT sum(x.quantity) AS sold FROM bookings x
                      WHERE x.event_id = e.id AND x.status = 'confirmed') b ON true
  LEFT JOIN LATERAL (SELECT sum(x.quantity) AS held FROM holds x
                      WHERE x.event_id = e.id AND x.status = 'held') h ON true
  CROSS JOIN LATERAL (SELECT coalesce(sum(t.reserved), 0) AS reserved FROM ticket_types t
                       WHERE t.event_id = e.id) r
 WHERE e.available_tickets
       <> CASE WHEN e.status = 'cancelled' THEN e.capacity
               ELSE e.capacity - coalesce(b.sold, 0) - coalesce(h.held, 0) - r.reserved END
 ORDER BY e.id
 LIMIT $1
