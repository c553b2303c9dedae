-- The rows Redis accepted, by id (locked by relay_lock_batch in the same transaction).
DELETE FROM outbox WHERE id = ANY($1::bigint[])
