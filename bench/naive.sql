-- The ceilings' booking: one booking per call and per commit, the simplest code that
-- books a ticket (take it from the event's count, write the booking and its outbox row),
-- with none of the booking rule's checks. It is the bench's own so that the ceilings
-- measure a fixed design; eventbook's book_tickets may change without moving them.
CREATE OR REPLACE FUNCTION bench_book_one(p_event uuid, p_user uuid)
RETURNS TABLE (outcome text, available integer, id uuid)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_left integer;
    v_id   uuid;
BEGIN
    UPDATE events e SET available_tickets = e.available_tickets - 1
     WHERE e.id = p_event AND e.available_tickets >= 1
    RETURNING e.available_tickets INTO v_left;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'sold_out'::text, NULL::integer, NULL::uuid;
        RETURN;
    END IF;
    INSERT INTO bookings (event_id, user_id, quantity, request_fingerprint)
    VALUES (p_event, p_user, 1, 'bench') RETURNING bookings.id INTO v_id;
    INSERT INTO outbox (topic, kind, payload)
    VALUES ('confirmations', 'booking_confirmed', jsonb_build_object('booking_id', v_id));
    RETURN QUERY SELECT 'created'::text, v_left, v_id;
END $$;
