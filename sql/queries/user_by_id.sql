SELECT id, email, name, role, created_at FROM users WHERE id = $1
