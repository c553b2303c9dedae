-- What offer_waitlist could not do when tickets came back, because it depends on the
-- time: offers for a type whose sales window has opened since (its reserve was kept
-- until then), and the reserve of a type whose sales have ended or whose event has
-- started, which goes back to the event. The holds actor calls it on each pass; it
-- finds such types through the small set of types with something reserved, and costs
-- nothing more while there are none.
--
-- Events are locked in id order, each waited for at most c_event_lock_wait, as in
-- expire_holds: one busy event is looked at again on the next pass. Returns the offers
-- made.

CREATE OR REPLACE FUNCTION offer_due_waitlists(p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    c_event_lock_wait CONSTANT text := '200ms';
    v_lock_timeout text := current_setting('lock_timeout');
    v_event  uuid;
    v_offers integer := 0;
BEGIN
    FOR v_event IN
        SELECT DISTINCT t.event_id
          FROM ticket_types t
          JOIN events e ON e.id = t.event_id
          LEFT JOIN LATERAL (
                SELECT w.quantity FROM waitlist_entries w
                 WHERE w.ticket_type_id = t.id AND w.status = 'waiting'
                   AND (NOT t.waitlist_allow_skip OR w.quantity <= t.reserved)
                 ORDER BY w.seq LIMIT 1) n ON true
         WHERE t.reserved > 0
           AND (e.status <> 'scheduled' OR e.starts_at <= now()
                OR t.status <> 'on_sale' OR t.sales_end <= now() OR n.quantity IS NULL
                OR (n.quantity <= t.reserved AND coalesce(t.sales_start <= now(), true)))
         ORDER BY t.event_id
         LIMIT p_limit
    LOOP
        PERFORM set_config('lock_timeout', c_event_lock_wait, true);
        BEGIN
            PERFORM FROM events e WHERE e.id = v_event FOR NO KEY UPDATE;
            PERFORM set_config('lock_timeout', v_lock_timeout, true);
            v_offers := v_offers + offer_waitlist(v_event);
        EXCEPTION WHEN lock_not_available THEN
            -- Busy for longer than the wait: looked at again on the next pass.
        END;
    END LOOP;
    PERFORM set_config('lock_timeout', v_lock_timeout, true);
    RETURN v_offers;
END $$;
