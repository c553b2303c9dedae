-- eventbook's functions (in the schema migrations run in, not an extension's) that this
-- transaction did not create or replace: CREATE OR REPLACE always writes a new version
-- of the function's pg_proc row, so the row's xmin is this transaction's id.
SELECT p.oid::regprocedure::text AS signature
  FROM pg_proc p
 WHERE p.pronamespace = current_schema()::regnamespace
   AND p.xmin <> pg_current_xact_id()::xid
   AND NOT EXISTS (SELECT FROM pg_depend d
                    WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                      AND d.deptype = 'e')
