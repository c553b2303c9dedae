SELECT offer_due_waitlists($1)
