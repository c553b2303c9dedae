-- A log-in: the user and its password hash.
SELECT id, email, name, role, created_at, password_hash FROM users WHERE email_key = $1
