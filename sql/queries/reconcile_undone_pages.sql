-- Which of these pages of an announcement are still not delivered. $1 event,
-- $2 version, $3 pages.
SELECT page
  FROM announcement_pages
 WHERE event_id = $1 AND version = $2 AND page = ANY($3::integer[]) AND done_at IS NULL
 ORDER BY page
