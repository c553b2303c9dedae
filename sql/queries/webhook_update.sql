-- Change endpoint $1 of organizer $2 with the fields $3 names (jsonb: url, description,
-- event_types, event_ids (null: all events), status). Enabling it ends its pause and
-- its run of failures: its waiting deliveries go out at once. No row when it is not the
-- organizer's, or when an event id named is not one of the organizer's events.
UPDATE webhook_endpoints w
   SET url = coalesce($3 ->> 'url', w.url),
       description = coalesce($3 ->> 'description', w.description),
       event_types = CASE WHEN $3 ? 'event_types'
                          THEN ARRAY(SELECT jsonb_array_elements_text($3 -> 'event_types'))
                          ELSE w.event_types END,
       event_ids = CASE WHEN NOT $3 ? 'event_ids' THEN w.event_ids
                        WHEN jsonb_typeof($3 -> 'event_ids') = 'null' THEN NULL
                        ELSE ARRAY(SELECT jsonb_array_elements_text($3 -> 'event_ids'))::uuid[]
                   END,
       status = coalesce($3 ->> 'status', w.status),
       paused_reason = CASE coalesce($3 ->> 'status', w.status)
                           WHEN 'enabled' THEN NULL
                           ELSE CASE WHEN w.status = 'paused' THEN w.paused_reason
                                     ELSE 'owner' END END,
       paused_at = CASE coalesce($3 ->> 'status', w.status)
                       WHEN 'enabled' THEN NULL
                       ELSE coalesce(w.paused_at, now()) END,
       consecutive_failures = CASE WHEN $3 ->> 'status' = 'enabled' AND w.status = 'paused'
                                   THEN 0 ELSE w.consecutive_failures END,
       failing_since = CASE WHEN $3 ->> 'status' = 'enabled' AND w.status = 'paused'
                            THEN NULL ELSE w.failing_since END,
       updated_at = now()
 WHERE w.id = $1 AND w.organizer_id = $2
   AND (NOT $3 ? 'event_ids' OR jsonb_typeof($3 -> 'event_ids') = 'null'
        OR (SELECT count(*) FROM events e
             WHERE e.organizer_id = $2
               AND e.id = ANY (ARRAY(SELECT jsonb_array_elements_text($3 -> 'event_ids'))::uuid[]))
           = (SELECT count(DISTINCT x) FROM jsonb_array_elements_text($3 -> 'event_ids') x))
RETURNING *
