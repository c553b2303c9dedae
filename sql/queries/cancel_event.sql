SELECT outcome, event FROM cancel_event($1, $2)
