-- The functions this transaction created or replaced (see functions_not_replaced).
SELECT p.oid::regprocedure::text AS signature
  FROM pg_proc p
 WHERE p.pronamespace = current_schema()::regnamespace
   AND p.xmin = pg_current_xact_id()::xid
