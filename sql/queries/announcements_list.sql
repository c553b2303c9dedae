-- An event's announcements, newest first, with delivery counts.
-- $1 event, $2 versions below this one (NULL: from the newest), $3 how many.
SELECT a.version, a.kind, a.changed_at, a.recipients_total, a.started_at, a.finished_at,
       c.delivered, c.failed,
       EXISTS (SELECT 1 FROM announcements newer
                WHERE newer.event_id = a.event_id AND newer.version > a.version) AS superseded
  FROM announcements a
 CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE n.sent_at IS NOT NULL) AS delivered,
               count(*) FILTER (WHERE n.failed_at IS NOT NULL) AS failed
          FROM notifications n
         WHERE n.event_id = a.event_id AND n.event_version = a.version
           AND n.kind = a.kind AND n.booking_id IS NULL) c
 WHERE a.event_id = $1 AND ($2::integer IS NULL OR a.version < $2)
 ORDER BY a.version DESC
 LIMIT $3
