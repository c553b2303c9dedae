SELECT * FROM webhook_endpoints
 WHERE organizer_id = $1 AND (created_at, id) > ($3, $4)
 ORDER BY created_at, id LIMIT $2
