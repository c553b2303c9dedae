SELECT organizer_id FROM events WHERE id = $1
