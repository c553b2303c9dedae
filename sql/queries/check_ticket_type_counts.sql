-- Ticket types whose taken count disagrees with the items of confirmed bookings and
-- live holds, and what is reserved for the waiting list.
SELECT t.id, t.event_id, t.name, t.quota, t.taken, t.reserved,
       coalesce(b.sold, 0) + coalesce(h.held, 0) + t.reserved AS expected_taken
  FROM ticket_types t
  LEFT JOIN LATERAL (SELECT sum(i.quantity) AS sold
                       FROM booking_items i JOIN bookings x ON x.id = i.booking_id
                      WHERE i.ticket_type_id = t.id AND x.status = 'confirmed') b ON true
  LEFT JOIN LATERAL (SELECT sum(i.quantity) AS held
                       FROM hold_items i JOIN holds x ON x.id = i.hold_id
                      WHERE i.ticket_type_id = t.id AND x.status = 'held') h ON true
 WHERE t.taken <> coalesce(b.sold, 0) + coalesce(h.held, 0) + t.reserved
 ORDER BY t.event_id, t.id
 LIMIT $1
