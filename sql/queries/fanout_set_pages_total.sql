UPDATE announcements SET pages_total = $3 WHERE event_id = $1 AND version = $2
