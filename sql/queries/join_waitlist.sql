SELECT j.outcome, j.available, j.allowed, (j.entry).id FROM join_waitlist($1, $2, $3, $4) j
