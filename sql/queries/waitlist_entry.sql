-- One waiting-list entry, for its customer ($2): no row for anyone else's.
SELECT s.* FROM waitlist_entries w, waitlist_entry_shown(w) s
 WHERE w.id = $1 AND w.user_id = $2
