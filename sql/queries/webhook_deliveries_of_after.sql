SELECT * FROM webhook_deliveries
 WHERE endpoint_id = $1 AND ($5::text IS NULL OR status = $5)
   AND (created_at, id) < ($3, $4)
 ORDER BY created_at DESC, id DESC LIMIT $2
