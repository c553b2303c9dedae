-- Events whose remaining tickets disagree with their confirmed bookings.
SELECT e.id, e.title, e.status, e.capacity, e.available_tickets,
       e.capacity - COALESCE(sum(b.quantity) FILTER (WHERE b.status = 'confirmed'), 0)
           AS expected_available
  FROM events e
  LEFT JOIN bookings b ON b.event_id = e.id
 GROUP BY e.id
HAVING e.available_tickets
       <> e.capacity - COALESCE(sum(b.quantity) FILTER (WHERE b.status = 'confirmed'), 0)
 ORDER BY e.id
 LIMIT $1
