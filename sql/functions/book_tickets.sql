CREATE OR REPLACE FUNCTION book_tickets(
    p_event           uuid,
    p_user            uuid,
    p_quantity        integer,
    p_idempotency_key text,
    p_fingerprint     text,
    p_request_id      text
) RETURNS TABLE (outcome text, available integer, booking bookings)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_booking bookings;
    v_event   events;
    v_held    integer;
BEGIN
    IF p_idempotency_key IS NOT NULL THEN
        SELECT * INTO v_booking FROM bookings b
         WHERE b.user_id = p_user AND b.idempotency_key = p_idempotency_key;
        IF FOUND THEN
            RETURN QUERY SELECT CASE WHEN v_booking.request_fingerprint = p_fingerprint
                                     THEN 'replayed' ELSE 'key_reused' END,
                                NULL::integer, v_booking;
            RETURN;
        END IF;
    END IF;

    -- One statement checks and takes the tickets. Its row lock is held until commit;
    -- a concurrent booking waits, then re-checks the condition on the committed count,
    -- so available_tickets can never go below zero.
    UPDATE events e
       SET available_tickets = e.available_tickets - p_quantity
     WHERE e.id = p_event
       AND e.status = 'scheduled'
       AND e.starts_at > now()
       AND e.available_tickets >= p_quantity
       AND p_quantity <= e.max_tickets_per_booking
    RETURNING e.* INTO v_event;

    IF NOT FOUND THEN
        IF p_idempotency_key IS NOT NULL THEN
            -- A concurrent twin with the same key may have taken the last tickets.
            SELECT * INTO v_booking FROM bookings b
             WHERE b.user_id = p_user AND b.idempotency_key = p_idempotency_key;
            IF FOUND THEN
                RETURN QUERY SELECT CASE WHEN v_booking.request_fingerprint = p_fingerprint
                                         THEN 'replayed' ELSE 'key_reused' END,
                                    NULL::integer, v_booking;
                RETURN;
            END IF;
        END IF;
        SELECT * INTO v_event FROM events e WHERE e.id = p_event;
        IF NOT FOUND THEN
            RETURN QUERY SELECT 'event_not_found', NULL::integer, NULL::bookings;
        ELSIF v_event.status <> 'scheduled' OR v_event.starts_at <= now() THEN
            RETURN QUERY SELECT 'event_not_bookable', v_event.available_tickets, NULL::bookings;
        ELSIF p_quantity > v_event.max_tickets_per_booking THEN
            RETURN QUERY SELECT 'too_many_tickets', v_event.max_tickets_per_booking,
                                NULL::bookings;
        ELSE
            RETURN QUERY SELECT 'sold_out', v_event.available_tickets, NULL::bookings;
        END IF;
        RETURN;
    END IF;

    IF v_event.max_tickets_per_customer IS NOT NULL THEN
        -- Under the row lock just taken, with a snapshot newer than it (see the top).
        SELECT coalesce(sum(b.quantity), 0) INTO v_held FROM bookings b
         WHERE b.event_id = p_event AND b.user_id = p_user AND b.status = 'confirmed';
        IF v_held + p_quantity > v_event.max_tickets_per_customer THEN
            -- Give the tickets back; we still hold the row lock, so nobody saw them gone.
            UPDATE events e SET available_tickets = e.available_tickets + p_quantity
             WHERE e.id = p_event;
            IF p_idempotency_key IS NOT NULL THEN
                -- A twin with the same key committed while we waited is in v_held.
                SELECT * INTO v_booking FROM bookings b
                 WHERE b.user_id = p_user AND b.idempotency_key = p_idempotency_key;
                IF FOUND THEN
                    RETURN QUERY SELECT CASE WHEN v_booking.request_fingerprint = p_fingerprint
                                             THEN 'replayed' ELSE 'key_reused' END,
                                        NULL::integer, v_booking;
                    RETURN;
                END IF;
            END IF;
            RETURN QUERY SELECT 'customer_limit_reached',
                                greatest(v_event.max_tickets_per_customer - v_held, 0),
                                NULL::bookings;
            RETURN;
        END IF;
    END IF;

    INSERT INTO bookings (event_id, user_id, quantity, idempotency_key, request_fingerprint)
    VALUES (p_event, p_user, p_quantity, p_idempotency_key, p_fingerprint)
    ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING * INTO v_booking;

    IF NOT FOUND THEN
        -- A concurrent twin with the same key committed first: give the tickets back
        -- (we still hold the row lock, so nobody saw them gone) and answer with its booking.
        UPDATE events e SET available_tickets = e.available_tickets + p_quantity
         WHERE e.id = p_event;
        SELECT * INTO v_booking FROM bookings b
         WHERE b.user_id = p_user AND b.idempotency_key = p_idempotency_key;
        RETURN QUERY SELECT CASE WHEN v_booking.request_fingerprint = p_fingerprint
                                 THEN 'replayed' ELSE 'key_reused' END,
                            NULL::integer, v_booking;
        RETURN;
    END IF;

    INSERT INTO outbox (topic, kind, payload, request_id)
    VALUES ('confirmations', 'booking_confirmed',
            jsonb_build_object('booking_id', v_booking.id), p_request_id);

    RETURN QUERY SELECT 'created', v_event.available_tickets, v_booking;
END $$;
