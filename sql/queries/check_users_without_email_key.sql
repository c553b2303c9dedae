-- Users without an e-mail key: their address folds to the key of another user's
-- (eventbook/emails.py), found when the key was added. They cannot log in until their
-- address changes.
SELECT id, email, created_at
  FROM users
 WHERE email_key IS NULL
 ORDER BY created_at, id
 LIMIT 100
