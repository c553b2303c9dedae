-- A customer's waiting-list entries, newest first: the $2 rows after the cursor ($3, $4).
SELECT s.* FROM waitlist_entries w, waitlist_entry_shown(w) s
 WHERE w.user_id = $1 AND (w.created_at, w.id) < ($3, $4)
 ORDER BY w.created_at DESC, w.id DESC
 LIMIT $2
