-- Put an announcement's expand message back in the outbox, as update_event and
-- cancel_event write it, unless it was expanded or finished since it was found.
-- $1 event, $2 version, $3 request id. (The outbox_announce trigger leaves the existing
-- announcement as it is.)
INSERT INTO outbox (topic, kind, payload, request_id)
SELECT 'notifications', a.kind, jsonb_build_object('event_id', a.event_id, 'version', a.version),
       $3
  FROM announcements a
 WHERE a.event_id = $1 AND a.version = $2
   AND a.pages_total IS NULL AND a.finished_at IS NULL
RETURNING id
