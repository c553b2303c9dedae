DELETE FROM webhook_endpoints WHERE id = $1 AND organizer_id = $2 RETURNING id
