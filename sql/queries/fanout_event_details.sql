SELECT title, venue, starts_at, ends_at FROM events WHERE id = $1
