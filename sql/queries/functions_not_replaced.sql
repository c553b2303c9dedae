-- The functions an earlier migrate applied (they carry its mark, $1) that this
-- transaction did not create or replace: CREATE OR REPLACE always writes a new version
-- of the function's pg_proc row, so the row's xmin is this transaction's id.
SELECT p.oid::regprocedure::text AS signature
  FROM pg_proc p
 WHERE p.pronamespace = current_schema()::regnamespace
   AND p.xmin <> pg_current_xact_id()::xid
   AND obj_description(p.oid, 'pg_proc') = $1
