-- The mails recorded for each (booking $1, kind $2) pair (parallel arrays).
SELECT n.id, n.booking_id, n.kind, n.recipient, n.subject, n.body, n.sent_at
  FROM unnest($1::uuid[], $2::text[]) AS m (booking_id, kind)
  JOIN notifications n ON n.booking_id = m.booking_id AND n.kind = m.kind
