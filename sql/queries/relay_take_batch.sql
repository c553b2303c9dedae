-- SKIP LOCKED: several relays take disjoint batches instead of queueing on each other.
DELETE FROM outbox
 WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING id, topic, kind, payload, request_id, created_at
