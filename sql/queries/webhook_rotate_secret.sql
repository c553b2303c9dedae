-- Endpoint $1 of organizer $2 gets secret $3; the current one keeps signing too for $4
-- seconds. A rotation during the grace period of an earlier one drops the oldest secret.
UPDATE webhook_endpoints w
   SET previous_secret = w.secret, secret = $3,
       previous_secret_until = now() + make_interval(secs => $4), updated_at = now()
 WHERE w.id = $1 AND w.organizer_id = $2
RETURNING *
