-- How many attendees a change is for. $1 event, $2 kind, $3 changed_at.
SELECT count(DISTINCT user_id) FROM change_recipients($1, $2, $3)
