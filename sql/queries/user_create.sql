INSERT INTO users (email, email_key, name, role, password_hash)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, email, name, role, created_at
