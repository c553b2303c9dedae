-- Delete up to $2 deliveries that succeeded or failed more than $1 seconds ago; returns
-- how many went.
WITH gone AS (
    DELETE FROM webhook_deliveries
     WHERE id IN (SELECT id FROM webhook_deliveries
                   WHERE status <> 'pending'
                     AND finished_at < now() - make_interval(secs => $1)
                   LIMIT $2)
    RETURNING 1
)
SELECT count(*)::integer FROM gone
