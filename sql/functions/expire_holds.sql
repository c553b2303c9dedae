-- Expires up to p_limit holds whose time has run out, oldest first, giving their
-- tickets back; returns how many it expired and the seconds until the next live hold
-- runs out by the database's clock (NULL: none live), so the holds actor knows when to
-- look again.
--
-- Several workers may run it at once: the due holds' events are locked first, in id
-- order, as everywhere (so a worker never waits on a hold's row while holding an
-- event's lock that the hold's confirmation or the event's cancel needs), then the due
-- holds are claimed FOR UPDATE SKIP LOCKED: a hold that a confirmation or a release has
-- in hand is passed over, and whoever has it decides it. release_holds ends a hold only
-- while it is live, so each expires once.

CREATE OR REPLACE FUNCTION expire_holds(p_limit integer)
RETURNS TABLE (expired integer, next_in_seconds double precision)
LANGUAGE plpgsql AS $$
DECLARE
    v_events uuid[];
    v_due    uuid[];
BEGIN
    SELECT array_agg(DISTINCT d.event_id) INTO v_events
      FROM (SELECT h.event_id FROM holds h
             WHERE h.status = 'held' AND h.expires_at <= now()
             ORDER BY h.expires_at LIMIT p_limit) d;
    IF v_events IS NOT NULL THEN
        PERFORM FROM events e WHERE e.id = ANY (v_events) ORDER BY e.id FOR NO KEY UPDATE;
        SELECT array_agg(d.id) INTO v_due
          FROM (SELECT h.id FROM holds h
                 WHERE h.status = 'held' AND h.expires_at <= now()
                   AND h.event_id = ANY (v_events)
                 ORDER BY h.expires_at LIMIT p_limit
                   FOR UPDATE SKIP LOCKED) d;
    END IF;
    RETURN QUERY
    SELECT (SELECT count(*)::integer FROM release_holds(coalesce(v_due, '{}'), 'expired')),
           (SELECT extract(epoch FROM min(h.expires_at) - clock_timestamp())::double precision
              FROM holds h WHERE h.status = 'held');
END $$;
