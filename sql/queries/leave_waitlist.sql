SELECT outcome FROM leave_waitlist($1, $2)
