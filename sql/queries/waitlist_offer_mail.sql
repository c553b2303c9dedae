-- A waiting-list offer: its hold, whom it is for, what it holds, and its mail if one was
-- recorded already (a redelivery).
SELECT h.id, h.event_id, h.user_id, h.quantity, h.total_cents, h.currency, h.expires_at,
       u.email, u.name, e.title, e.starts_at, e.venue, t.name AS ticket_type,
       n.id AS note_id, n.recipient, n.subject, n.body, n.sent_at
  FROM holds h
  JOIN users u ON u.id = h.user_id
  JOIN events e ON e.id = h.event_id
  JOIN hold_items i ON i.hold_id = h.id
  JOIN ticket_types t ON t.id = i.ticket_type_id
  LEFT JOIN notifications n ON n.hold_id = h.id AND n.kind = 'waitlist_offer'
 WHERE h.id = $1
 LIMIT 1
