-- A new endpoint of organizer $1; $5 event ids must all be the organizer's events
-- (checked by the caller in the same statement: no row when one is not).
INSERT INTO webhook_endpoints (organizer_id, url, description, event_types, event_ids, status,
                               paused_reason, paused_at, secret)
SELECT $1, $2, $3, $4, $5, $6, CASE WHEN $6 = 'paused' THEN 'owner' END,
       CASE WHEN $6 = 'paused' THEN now() END, $7
 WHERE $5::uuid[] IS NULL
    OR (SELECT count(*) FROM events e WHERE e.id = ANY ($5) AND e.organizer_id = $1)
       = cardinality(ARRAY(SELECT DISTINCT unnest($5::uuid[])))
RETURNING *
