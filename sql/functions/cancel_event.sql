CREATE OR REPLACE FUNCTION cancel_event(p_event uuid, p_request_id text)
RETURNS TABLE (outcome text, event events)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_event events;
BEGIN
    SELECT * INTO v_event FROM events e WHERE e.id = p_event FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'event_not_found', NULL::events;
        RETURN;
    END IF;
    IF v_event.status = 'cancelled' THEN
        RETURN QUERY SELECT 'event_cancelled', v_event;
        RETURN;
    END IF;
    IF coalesce(v_event.ends_at, v_event.starts_at) <= now() THEN
        RETURN QUERY SELECT 'event_ended', v_event;
        RETURN;
    END IF;

    UPDATE bookings b
       SET status = 'cancelled', cancel_reason = 'event_cancelled', cancelled_at = now()
     WHERE b.event_id = p_event AND b.status = 'confirmed';
    -- Its live holds end with it; every ticket is back, so no type has any taken.
    UPDATE holds h SET status = 'released', ended_at = now()
     WHERE h.event_id = p_event AND h.status = 'held';
    UPDATE ticket_types t SET taken = 0, reserved = 0, waiting = 0
     WHERE t.event_id = p_event AND (t.taken <> 0 OR t.waiting <> 0);
    UPDATE waitlist_entries w SET status = 'cancelled', ended_at = now()
     WHERE w.event_id = p_event AND w.status IN ('waiting', 'offered');

    UPDATE events e
       SET status = 'cancelled', available_tickets = e.capacity,
           version = e.version + 1, updated_at = now()
     WHERE e.id = p_event
    RETURNING e.* INTO v_event;

    INSERT INTO outbox (topic, kind, payload, request_id)
    VALUES ('notifications', 'event_cancelled',
            jsonb_build_object('event_id', v_event.id, 'version', v_event.version),
            p_request_id);
    -- One event.cancelled stands for its bookings too (cancel_reason event_cancelled):
    -- no booking.cancelled per booking.
    IF webhook_wanted(p_event, 'event.cancelled') THEN
        INSERT INTO outbox (topic, kind, payload, request_id)
        VALUES ('webhooks', 'event.cancelled',
                jsonb_build_object('event_id', v_event.id, 'version', v_event.version),
                p_request_id);
    END IF;

    RETURN QUERY SELECT 'cancelled', v_event;
END $$;
