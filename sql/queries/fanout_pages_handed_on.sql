SELECT count(*) FROM announcement_pages WHERE event_id = $1 AND version = $2
