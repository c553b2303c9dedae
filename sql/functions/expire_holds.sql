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
--
-- Each event's row is waited for at most c_event_lock_wait: a row held long (an
-- organizer's change, the cancel of a large event) must not hold back the holds of
-- every other event. That event's holds are passed over this time and expire on a
-- later pass, once its row is free; a booking call holds a row for milliseconds, well
-- within the wait. The events considered are the p_limit whose holds fell due first,
-- each once, so an event passed over with many holds due never crowds the others out.

CREATE OR REPLACE FUNCTION expire_holds(p_limit integer)
RETURNS TABLE (expired integer, next_in_seconds double precision)
LANGUAGE plpgsql AS $$
DECLARE
    c_event_lock_wait CONSTANT text := '200ms';
    v_lock_timeout text := current_setting('lock_timeout');
    v_event  uuid;
    v_locked uuid[] := '{}';
    v_due    uuid[];
BEGIN
    PERFORM set_config('lock_timeout', c_event_lock_wait, true);
    FOR v_event IN
        SELECT d.event_id
          FROM (SELECT h.event_id, min(h.expires_at) AS due FROM holds h
                 WHERE h.status = 'held' AND h.expires_at <= now()
                 GROUP BY h.event_id ORDER BY due LIMIT p_limit) d
         ORDER BY d.event_id
    LOOP
        BEGIN
            PERFORM FROM events e WHERE e.id = v_event FOR NO KEY UPDATE;
            v_locked := v_locked || v_event;
        EXCEPTION WHEN lock_not_available THEN
            -- Busy for longer than the wait: this event's holds wait for a later pass.
        END;
    END LOOP;
    PERFORM set_config('lock_timeout', v_lock_timeout, true);

    SELECT array_agg(d.id) INTO v_due
      FROM (SELECT h.id FROM holds h
             WHERE h.status = 'held' AND h.expires_at <= now()
               AND h.event_id = ANY (v_locked)
             ORDER BY h.expires_at LIMIT p_limit
               FOR UPDATE SKIP LOCKED) d;
    RETURN QUERY
    SELECT (SELECT count(*)::integer FROM release_holds(coalesce(v_due, '{}'), 'expired')),
           (SELECT extract(epoch FROM min(h.expires_at) - clock_timestamp())::double precision
              FROM holds h WHERE h.status = 'held');
END $$;
