SELECT kind, changed_at, expanded_through, pages_total FROM announcements
 WHERE event_id = $1 AND version = $2
