-- Mark an announcement finished once it is expanded and every page is delivered.
-- $1 event, $2 version. No row when it is not done yet, or was finished already.
UPDATE announcements a SET finished_at = now()
 WHERE a.event_id = $1 AND a.version = $2
   AND a.finished_at IS NULL AND a.pages_total IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM announcement_pages p
                    WHERE p.event_id = a.event_id AND p.version = a.version
                      AND p.done_at IS NULL)
RETURNING a.recipients_total
