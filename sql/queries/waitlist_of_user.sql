-- A customer's waiting-list entries, newest first: the first page of $2 rows.
SELECT s.* FROM waitlist_entries w, waitlist_entry_shown(w) s
 WHERE w.user_id = $1
 ORDER BY w.created_at DESC, w.id DESC
 LIMIT $2
