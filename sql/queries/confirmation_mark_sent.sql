-- One statement, so one commit: each mail (notification $1, booking $2, kind $3;
-- parallel arrays) is stamped sent and, for a confirmation, its booking with it.
WITH m AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS m (note_id, booking_id, kind)
), sent AS (
    UPDATE notifications n SET sent_at = now()
      FROM m WHERE n.id = m.note_id AND n.sent_at IS NULL
)
UPDATE bookings b SET confirmation_status = 'sent', confirmed_at = now()
  FROM m
 WHERE b.id = m.booking_id AND m.kind = 'booking_confirmed'
   AND b.confirmation_status <> 'sent'
