-- One reconciler pass at a time across every process: a lock held until the pass's
-- transaction ends (the key is "reconcil" in ASCII). $1 true: wait for a pass running
-- elsewhere (a command run by hand); false: give up at once (the actor skips this
-- pass). True when the lock is held.
SELECT CASE WHEN $1::boolean
            THEN (SELECT true FROM pg_advisory_xact_lock(8243104023216089452))
            ELSE pg_try_advisory_xact_lock(8243104023216089452)
       END
