-- The decision, and the entry as waitlist_entry_shown shows it (a new entry waits last).
SELECT j.outcome, j.available, j.allowed, (j.entry).id, (j.entry).event_id,
       (j.entry).ticket_type_id, (j.entry).quantity, (j.entry).status, j.position,
       (j.entry).hold_id, NULL::timestamptz AS offer_expires_at, (j.entry).created_at,
       (j.entry).offered_at, (j.entry).ended_at
  FROM join_waitlist($1, $2, $3, $4) j
