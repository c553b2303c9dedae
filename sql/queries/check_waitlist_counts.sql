-- Ticket types whose count of waiting entries (ticket_types.waiting, shown as
-- waitlist_length) disagrees with the entries.
SELECT t.id, t.event_id, t.name, t.waiting, coalesce(q.waiting, 0) AS expected_waiting
  FROM ticket_types t
  LEFT JOIN (SELECT w.ticket_type_id, count(*)::integer AS waiting FROM waitlist_entries w
              WHERE w.status = 'waiting' GROUP BY w.ticket_type_id) q
    ON q.ticket_type_id = t.id
 WHERE t.waiting <> coalesce(q.waiting, 0)
 ORDER BY t.event_id, t.id
 LIMIT $1
