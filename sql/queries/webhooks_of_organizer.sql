SELECT * FROM webhook_endpoints WHERE organizer_id = $1 ORDER BY created_at, id LIMIT $2
