-- Endpoint $1 of organizer $2: no row for anyone else's.
SELECT * FROM webhook_endpoints WHERE id = $1 AND organizer_id = $2
