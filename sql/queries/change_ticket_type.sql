SELECT c.outcome, c.taken, c.currency, (c.ticket_type).id
  FROM change_ticket_type($1, $2, $3) c
