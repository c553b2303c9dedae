-- The attendees of one page not yet told about this change: no notification row yet, or
-- one recorded failed (sent again when the page is delivered again, e.g. replayed).
-- $1 event, $2 kind, $3 changed_at, $4 after (exclusive, NULL: from the start),
-- $5 upto (inclusive), $6 version.
SELECT u.id, u.email, u.name
  FROM users u
 WHERE u.id IN (SELECT user_id FROM change_recipients($1, $2, $3)
                 WHERE ($4::uuid IS NULL OR user_id > $4) AND user_id <= $5)
   AND NOT EXISTS (
        SELECT 1 FROM notifications n
         WHERE n.event_id = $1 AND n.event_version = $6 AND n.user_id = u.id
           AND n.kind = $2 AND n.booking_id IS NULL AND n.sent_at IS NOT NULL)
 ORDER BY u.id
