-- eventbook's functions called $1 (in the schema migrations run in, not an extension's).
SELECT p.oid::regprocedure::text AS signature
  FROM pg_proc p
 WHERE p.pronamespace = current_schema()::regnamespace
   AND p.proname = $1
   AND NOT EXISTS (SELECT FROM pg_depend d
                    WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                      AND d.deptype = 'e')
