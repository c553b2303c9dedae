-- Users without an e-mail key (eventbook/emails.py). The schema requires one
-- (users_email_key_present), so none are found unless that constraint was lifted by
-- hand; such a user could not log in.
SELECT id, email, created_at
  FROM users
 WHERE email_key IS NULL
 ORDER BY created_at, id
 LIMIT $1
