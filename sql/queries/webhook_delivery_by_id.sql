-- Delivery $1 of endpoint $2 of organizer $3.
SELECT d.* FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id
 WHERE d.id = $1 AND d.endpoint_id = $2 AND w.organizer_id = $3
