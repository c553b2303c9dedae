SELECT EXISTS (SELECT 1 FROM announcements WHERE event_id = $1 AND version > $2)
