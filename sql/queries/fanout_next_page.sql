-- The next page of attendees to tell about a change: distinct users, keyset on user id.
-- $1 event, $2 kind, $3 changed_at, $4 after this user (NULL: from the start), $5 page size.
SELECT DISTINCT user_id
  FROM change_recipients($1, $2, $3)
 WHERE $4::uuid IS NULL OR user_id > $4
 ORDER BY user_id
 LIMIT $5
