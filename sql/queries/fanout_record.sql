-- Record the mails of one batch: sent ones with sent_at, given-up ones with failed_at.
-- The unique key (event, version, user, kind) keeps a redelivered page from recording
-- twice; a mail recorded failed and sent by a later delivery of its page (a replay from
-- the dead-letter stream) becomes sent. A sent mail's record never changes.
INSERT INTO notifications
       (user_id, kind, event_id, event_version, recipient, subject, body, sent_at, failed_at)
SELECT r.user_id, $2, $1, $3, r.recipient, r.subject, r.body,
       CASE WHEN r.ok THEN now() END, CASE WHEN r.ok THEN NULL ELSE now() END
  FROM unnest($4::uuid[], $5::text[], $6::text[], $7::text[], $8::boolean[])
       AS r (user_id, recipient, subject, body, ok)
    ON CONFLICT (event_id, event_version, user_id, kind) WHERE booking_id IS NULL
    DO UPDATE SET recipient = excluded.recipient, subject = excluded.subject,
                  body = excluded.body, sent_at = excluded.sent_at,
                  failed_at = excluded.failed_at
            WHERE notifications.sent_at IS NULL
