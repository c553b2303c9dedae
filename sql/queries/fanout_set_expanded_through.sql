UPDATE announcements SET expanded_through = $3
 WHERE event_id = $1 AND version = $2
