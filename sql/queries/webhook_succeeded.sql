-- Attempts of deliveries $1 were answered 2xx ($2, their status codes): they are done,
-- and their endpoints' runs of failures (if any) are over. Returns each delivery's
-- seconds from the change to now (its lag); no row for a delivery no longer pending
-- (its lease ran out and another attempt already recorded it).
-- Committed without waiting for the WAL flush (synchronous_commit off, for this
-- transaction only): a result lost in a crash leaves the delivery leased, and it is
-- sent again when the lease runs out, which at-least-once allows; waiting for the
-- flush would cost every delivery a disk write.
WITH quick AS (
    SELECT set_config('synchronous_commit', 'off', true)
), answered AS (
    SELECT * FROM unnest($1::uuid[], $2::integer[]) AS a (id, status_code)
), done AS (
    UPDATE webhook_deliveries d
       SET status = 'succeeded', next_attempt_at = NULL, finished_at = now(),
           last_status_code = a.status_code, last_error = NULL
      FROM answered a, quick
     WHERE d.id = a.id AND d.status = 'pending'
    RETURNING d.id, d.endpoint_id, d.occurred_at
), healthy AS (
    UPDATE webhook_endpoints w SET consecutive_failures = 0, failing_since = NULL
     WHERE w.id IN (SELECT endpoint_id FROM done) AND w.consecutive_failures > 0
)
SELECT done.id, extract(epoch FROM clock_timestamp() - done.occurred_at)::float8 AS lag_seconds
  FROM done
