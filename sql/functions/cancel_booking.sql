CREATE OR REPLACE FUNCTION cancel_booking(p_booking uuid, p_user uuid, p_request_id text)
RETURNS TABLE (outcome text, booking bookings)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_booking  bookings;
    v_event_id uuid;
    v_starts   timestamptz;
BEGIN
    SELECT b.event_id INTO v_event_id FROM bookings b
     WHERE b.id = p_booking AND b.user_id = p_user;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'booking_not_found', NULL::bookings;
        RETURN;
    END IF;
    -- Event row first, as everywhere, so this never deadlocks with an event cancel. The
    -- lock also holds starts_at still until the commit.
    SELECT e.starts_at INTO v_starts FROM events e WHERE e.id = v_event_id FOR NO KEY UPDATE;

    UPDATE bookings b
       SET status = 'cancelled', cancel_reason = 'customer', cancelled_at = now()
     WHERE b.id = p_booking AND b.status = 'confirmed' AND v_starts > now()
    RETURNING * INTO v_booking;
    IF NOT FOUND THEN
        SELECT * INTO v_booking FROM bookings b WHERE b.id = p_booking;
        RETURN QUERY SELECT CASE WHEN v_booking.status = 'cancelled' THEN 'already_cancelled'
                                 ELSE 'event_started' END,
                            v_booking;
        RETURN;
    END IF;

    UPDATE events e SET available_tickets = e.available_tickets + v_booking.quantity
     WHERE e.id = v_event_id;
    UPDATE ticket_types t SET taken = t.taken - i.quantity
      FROM booking_items i
     WHERE i.booking_id = v_booking.id AND t.id = i.ticket_type_id;
    -- Those waiting for them get them first.
    PERFORM offer_waitlist(v_event_id);

    INSERT INTO outbox (topic, kind, payload, request_id)
    SELECT m.topic, m.kind, jsonb_build_object('booking_id', v_booking.id), p_request_id
      FROM (VALUES (1, 'confirmations', 'booking_cancelled'),
                   (2, 'webhooks', 'booking.cancelled')) AS m (n, topic, kind)
     WHERE CASE WHEN m.n = 1 THEN true ELSE webhook_wanted(v_event_id, 'booking.cancelled') END
     ORDER BY m.n;

    RETURN QUERY SELECT 'cancelled', v_booking;
END $$;
