INSERT INTO announcement_pages
 (event_id, version, page, after_user, upto_user, recipients)
 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING
