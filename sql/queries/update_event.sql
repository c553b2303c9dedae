SELECT outcome, sold, event FROM update_event($1, $2, $3)
