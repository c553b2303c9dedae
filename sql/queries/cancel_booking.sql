SELECT outcome, booking FROM cancel_booking($1, $2, $3)
