SELECT outcome FROM delete_ticket_type($1, $2)
