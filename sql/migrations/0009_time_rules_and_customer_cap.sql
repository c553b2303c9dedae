-- Time rules, decided where the other rules of a change are.
--
-- A booking cannot be cancelled once its event has started (its tickets would go
-- back to an event nobody can book any more), and an event cannot be changed or
-- cancelled once it has ended (every attendee would be mailed about the past). An event
-- without ends_at counts as ended when it starts. Each is decided under the event's row
-- lock, in the transaction that makes the change, so a concurrent change of starts_at or
-- ends_at cannot slip between the check and the change.


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
    SELECT e.starts_at INTO v_starts FROM events e WHERE e.id = v_event_id FOR UPDATE;

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

    INSERT INTO outbox (topic, kind, payload, request_id)
    VALUES ('confirmations', 'booking_cancelled',
            jsonb_build_object('booking_id', v_booking.id), p_request_id);

    RETURN QUERY SELECT 'cancelled', v_booking;
END $$;


-- p_changes holds only the fields the organizer sent (JSON null clears an optional one).
CREATE OR REPLACE FUNCTION update_event(p_event uuid, p_changes jsonb, p_request_id text)
RETURNS TABLE (outcome text, sold integer, event events)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_old events;
    v_new events;
    v_capacity integer;
    v_starts timestamptz;
    v_ends timestamptz;
BEGIN
    SELECT * INTO v_old FROM events e WHERE e.id = p_event FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'event_not_found', NULL::integer, NULL::events;
        RETURN;
    END IF;
    IF v_old.status = 'cancelled' THEN
        RETURN QUERY SELECT 'event_cancelled', NULL::integer, v_old;
        RETURN;
    END IF;
    IF coalesce(v_old.ends_at, v_old.starts_at) <= now() THEN
        RETURN QUERY SELECT 'event_ended', NULL::integer, v_old;
        RETURN;
    END IF;

    v_capacity := COALESCE((p_changes ->> 'capacity')::integer, v_old.capacity);
    IF v_capacity < v_old.capacity - v_old.available_tickets THEN
        RETURN QUERY SELECT 'capacity_below_sold', v_old.capacity - v_old.available_tickets,
                            v_old;
        RETURN;
    END IF;
    v_starts := COALESCE((p_changes ->> 'starts_at')::timestamptz, v_old.starts_at);
    v_ends := CASE WHEN p_changes ? 'ends_at' THEN (p_changes ->> 'ends_at')::timestamptz
                   ELSE v_old.ends_at END;
    IF v_ends IS NOT NULL AND v_ends <= v_starts THEN
        RETURN QUERY SELECT 'ends_before_start', NULL::integer, v_old;
        RETURN;
    END IF;

    UPDATE events e SET
        title = COALESCE(p_changes ->> 'title', e.title),
        description = CASE WHEN p_changes ? 'description'
                           THEN COALESCE(p_changes ->> 'description', '') ELSE e.description END,
        venue = CASE WHEN p_changes ? 'venue' THEN p_changes ->> 'venue' ELSE e.venue END,
        starts_at = v_starts,
        ends_at = v_ends,
        capacity = v_capacity,
        available_tickets = e.available_tickets + (v_capacity - e.capacity),
        max_tickets_per_booking = COALESCE((p_changes ->> 'max_tickets_per_booking')::integer,
                                           e.max_tickets_per_booking),
        version = e.version + 1,
        updated_at = now()
     WHERE e.id = p_event
    RETURNING e.* INTO v_new;

    IF v_new.title IS DISTINCT FROM v_old.title
       OR v_new.venue IS DISTINCT FROM v_old.venue
       OR v_new.starts_at IS DISTINCT FROM v_old.starts_at
       OR v_new.ends_at IS DISTINCT FROM v_old.ends_at THEN
        INSERT INTO outbox (topic, kind, payload, request_id)
        VALUES ('notifications', 'event_updated',
                jsonb_build_object('event_id', v_new.id, 'version', v_new.version),
                p_request_id);
    END IF;

    RETURN QUERY SELECT 'updated', NULL::integer, v_new;
END $$;


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

    UPDATE events e
       SET status = 'cancelled', available_tickets = e.capacity,
           version = e.version + 1, updated_at = now()
     WHERE e.id = p_event
    RETURNING e.* INTO v_event;

    INSERT INTO outbox (topic, kind, payload, request_id)
    VALUES ('notifications', 'event_cancelled',
            jsonb_build_object('event_id', v_event.id, 'version', v_event.version),
            p_request_id);

    RETURN QUERY SELECT 'cancelled', v_event;
END $$;
