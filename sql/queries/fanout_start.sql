UPDATE announcements SET started_at = coalesce(started_at, now())
 WHERE event_id = $1 AND version = $2 RETURNING *
