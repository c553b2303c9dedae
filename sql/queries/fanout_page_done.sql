UPDATE announcement_pages SET done_at = now()
 WHERE event_id = $1 AND version = $2 AND page = $3 AND done_at IS NULL
