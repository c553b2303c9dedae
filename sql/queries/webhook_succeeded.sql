-- An attempt of delivery $1 was answered 2xx ($2): done, and its endpoint's run of
-- failures (if any) is over. Returns the seconds from the change to now (the delivery's
-- lag); no row when the delivery is no longer pending (its lease ran out and another
-- attempt already recorded it).
WITH done AS (
    UPDATE webhook_deliveries d
       SET status = 'succeeded', next_attempt_at = NULL, finished_at = now(),
           last_status_code = $2, last_error = NULL
     WHERE d.id = $1 AND d.status = 'pending'
    RETURNING d.endpoint_id, d.occurred_at
), healthy AS (
    UPDATE webhook_endpoints w SET consecutive_failures = 0, failing_since = NULL
      FROM done
     WHERE w.id = done.endpoint_id AND w.consecutive_failures > 0
)
SELECT extract(epoch FROM clock_timestamp() - done.occurred_at)::float8 AS lag_seconds
  FROM done
