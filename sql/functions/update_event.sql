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
    v_per_booking integer;
    v_per_customer integer;
    v_sold integer;
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
    -- Sold and held; what is reserved for the waiting list follows the new capacity.
    v_sold := v_old.capacity - v_old.available_tickets
              - (SELECT coalesce(sum(t.reserved), 0) FROM ticket_types t
                  WHERE t.event_id = p_event)::integer;
    IF v_capacity < v_sold THEN
        RETURN QUERY SELECT 'capacity_below_sold', v_sold, v_old;
        RETURN;
    END IF;
    v_starts := COALESCE((p_changes ->> 'starts_at')::timestamptz, v_old.starts_at);
    v_ends := CASE WHEN p_changes ? 'ends_at' THEN (p_changes ->> 'ends_at')::timestamptz
                   ELSE v_old.ends_at END;
    IF v_ends IS NOT NULL AND v_ends <= v_starts THEN
        RETURN QUERY SELECT 'ends_before_start', NULL::integer, v_old;
        RETURN;
    END IF;
    v_per_booking := COALESCE((p_changes ->> 'max_tickets_per_booking')::integer,
                              v_old.max_tickets_per_booking);
    v_per_customer := CASE WHEN p_changes ? 'max_tickets_per_customer'
                           THEN (p_changes ->> 'max_tickets_per_customer')::integer
                           ELSE v_old.max_tickets_per_customer END;
    IF v_per_customer < v_per_booking THEN
        RETURN QUERY SELECT 'customer_cap_below_booking_max', NULL::integer, v_old;
        RETURN;
    END IF;

    IF v_capacity <> v_old.capacity THEN
        PERFORM waitlist_unreserve(p_event);
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
        max_tickets_per_booking = v_per_booking,
        max_tickets_per_customer = v_per_customer,
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
    -- Organizers' systems hear of every change, not only those mailed to attendees.
    IF webhook_wanted(p_event, 'event.updated') THEN
        INSERT INTO outbox (topic, kind, payload, request_id)
        VALUES ('webhooks', 'event.updated',
                jsonb_build_object('event_id', v_new.id, 'version', v_new.version),
                p_request_id);
    END IF;

    IF v_capacity <> v_old.capacity THEN
        -- More to sell goes to those waiting first; less may shrink what is reserved.
        PERFORM offer_waitlist(p_event);
        SELECT * INTO v_new FROM events e WHERE e.id = p_event;
    END IF;

    RETURN QUERY SELECT 'updated', NULL::integer, v_new;
END $$;
