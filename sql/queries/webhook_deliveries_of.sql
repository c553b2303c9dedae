-- Deliveries of endpoint $1, newest first; $3 status or NULL for all.
SELECT * FROM webhook_deliveries
 WHERE endpoint_id = $1 AND ($3::text IS NULL OR status = $3)
 ORDER BY created_at DESC, id DESC LIMIT $2
