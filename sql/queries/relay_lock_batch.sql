-- The oldest rows, locked until the relay's transaction ends; SKIP LOCKED: several
-- relays take disjoint batches instead of queueing on each other.
SELECT id, topic, kind, payload, request_id, created_at
  FROM outbox
 ORDER BY id
 LIMIT $1
   FOR UPDATE SKIP LOCKED
