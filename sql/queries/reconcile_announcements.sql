-- Announcements not finished $1 seconds after their change, with no outbox row for
-- their expand message: one row each, or one per page not yet delivered when expanded
-- (page NULL: not expanded, or expanded with every page delivered). $2 at most this many
-- rows, oldest change first.
SELECT a.event_id, a.version, a.kind, a.changed_at, a.pages_total,
       p.page, p.after_user, p.upto_user
  FROM announcements a
  LEFT JOIN announcement_pages p
    ON a.pages_total IS NOT NULL
   AND p.event_id = a.event_id AND p.version = a.version AND p.done_at IS NULL
 WHERE a.finished_at IS NULL
   AND a.changed_at < now() - make_interval(secs => $1)
   AND NOT EXISTS (SELECT 1 FROM outbox o
                    WHERE o.topic = 'notifications' AND o.kind = a.kind
                      AND o.payload ->> 'event_id' = a.event_id::text
                      AND (o.payload ->> 'version')::integer = a.version)
 ORDER BY a.changed_at, a.event_id, a.version, p.page
 LIMIT $2
