-- Events whose remaining tickets disagree with their confirmed bookings and live holds
-- (a cancelled event has all its tickets back).
SELECT e.id, e.title, e.status, e.capacity, e.available_tickets,
       CASE WHEN e.status = 'cancelled' THEN e.capacity
            ELSE e.capacity - coalesce(b.sold, 0) - coalesce(h.held, 0) END AS expected_available
  FROM events e
  LEFT JOIN LATERAL (SELECT sum(x.quantity) AS sold FROM bookings x
                      WHERE x.event_id = e.id AND x.status = 'confirmed') b ON true
  LEFT JOIN LATERAL (SELECT sum(x.quantity) AS held FROM holds x
                      WHERE x.event_id = e.id AND x.status = 'held') h ON true
 WHERE e.available_tickets
       <> CASE WHEN e.status = 'cancelled' THEN e.capacity
               ELSE e.capacity - coalesce(b.sold, 0) - coalesce(h.held, 0) END
 ORDER BY e.id
 LIMIT $1
