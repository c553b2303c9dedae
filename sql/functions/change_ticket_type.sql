-- An organizer adds (p_type NULL) or changes a ticket type of p_event. p_fields holds
-- only the fields sent (JSON null clears an optional one). Under the event's row lock,
-- which every change of its tickets takes first, so a quota is never set below what is
-- taken by a booking being decided meanwhile.
--
-- Currency: an event sells in one. A type sent with another currency is accepted only
-- while the event has no priced type and has sold or held nothing; then the event's
-- currency changes with it. Outcomes: created, updated, event_not_found,
-- event_cancelled, ticket_type_not_found, currency_mismatch, quota_below_taken (with
-- taken), sales_end_before_start, name_taken, too_many_ticket_types (an event has at
-- most 100).

CREATE OR REPLACE FUNCTION change_ticket_type(p_event uuid, p_type uuid, p_fields jsonb)
RETURNS TABLE (outcome text, taken integer, currency text, ticket_type ticket_types)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_event    events;
    v_old      ticket_types;
    v_new      ticket_types;
    v_currency text := p_fields ->> 'currency';
    v_start    timestamptz;
    v_end      timestamptz;
BEGIN
    SELECT * INTO v_event FROM events e WHERE e.id = p_event FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'event_not_found', NULL::integer, NULL::text, NULL::ticket_types;
        RETURN;
    ELSIF v_event.status = 'cancelled' THEN
        RETURN QUERY SELECT 'event_cancelled', NULL::integer, NULL::text, NULL::ticket_types;
        RETURN;
    END IF;
    IF p_type IS NOT NULL THEN
        SELECT * INTO v_old FROM ticket_types t WHERE t.id = p_type AND t.event_id = p_event;
        IF NOT FOUND THEN
            RETURN QUERY SELECT 'ticket_type_not_found', NULL::integer, NULL::text,
                                NULL::ticket_types;
            RETURN;
        END IF;
    END IF;

    IF p_type IS NULL
       AND (SELECT count(*) FROM ticket_types t WHERE t.event_id = p_event) >= 100 THEN
        RETURN QUERY SELECT 'too_many_ticket_types', NULL::integer, NULL::text,
                            NULL::ticket_types;
        RETURN;
    END IF;

    IF v_currency IS NOT NULL AND v_currency <> v_event.currency THEN
        IF v_event.available_tickets <> v_event.capacity
           OR EXISTS (SELECT FROM ticket_types t WHERE t.event_id = p_event
                         AND t.price_cents > 0 AND t.id IS DISTINCT FROM p_type)
           OR EXISTS (SELECT FROM bookings b WHERE b.event_id = p_event)
           OR EXISTS (SELECT FROM holds h WHERE h.event_id = p_event) THEN
            RETURN QUERY SELECT 'currency_mismatch', NULL::integer, v_event.currency,
                                NULL::ticket_types;
            RETURN;
        END IF;
    END IF;

    -- Sold and held; what is reserved for the waiting list follows the new quota.
    IF p_fields ? 'quota'
       AND (p_fields ->> 'quota')::integer < coalesce(v_old.taken - v_old.reserved, 0) THEN
        RETURN QUERY SELECT 'quota_below_taken', v_old.taken - v_old.reserved, NULL::text,
                            v_old;
        RETURN;
    END IF;
    v_start := CASE WHEN p_fields ? 'sales_start' THEN (p_fields ->> 'sales_start')::timestamptz
                    ELSE v_old.sales_start END;
    v_end := CASE WHEN p_fields ? 'sales_end' THEN (p_fields ->> 'sales_end')::timestamptz
                  ELSE v_old.sales_end END;
    IF v_end <= v_start THEN
        RETURN QUERY SELECT 'sales_end_before_start', NULL::integer, NULL::text, v_old;
        RETURN;
    END IF;

    BEGIN
        IF p_fields ? 'quota' THEN
            PERFORM waitlist_unreserve(p_event);
        END IF;
        IF p_type IS NULL THEN
            INSERT INTO ticket_types (event_id, name, price_cents, quota, sales_start, sales_end,
                                      max_per_booking, status, waitlist_allow_skip)
            VALUES (p_event, p_fields ->> 'name', (p_fields ->> 'price_cents')::integer,
                    (p_fields ->> 'quota')::integer, v_start, v_end,
                    (p_fields ->> 'max_per_booking')::integer,
                    coalesce(p_fields ->> 'status', 'on_sale'),
                    coalesce((p_fields ->> 'waitlist_allow_skip')::boolean, false))
            RETURNING * INTO v_new;
        ELSE
            UPDATE ticket_types t SET
                name = coalesce(p_fields ->> 'name', t.name),
                price_cents = coalesce((p_fields ->> 'price_cents')::integer, t.price_cents),
                quota = CASE WHEN p_fields ? 'quota' THEN (p_fields ->> 'quota')::integer
                             ELSE t.quota END,
                sales_start = v_start,
                sales_end = v_end,
                max_per_booking = CASE WHEN p_fields ? 'max_per_booking'
                                       THEN (p_fields ->> 'max_per_booking')::integer
                                       ELSE t.max_per_booking END,
                status = coalesce(p_fields ->> 'status', t.status),
                waitlist_allow_skip = coalesce((p_fields ->> 'waitlist_allow_skip')::boolean,
                                               t.waitlist_allow_skip),
                updated_at = now()
             WHERE t.id = p_type
            RETURNING * INTO v_new;
        END IF;
        IF v_currency IS NOT NULL AND v_currency <> v_event.currency THEN
            UPDATE events e SET currency = v_currency, updated_at = now() WHERE e.id = p_event;
        END IF;
    EXCEPTION WHEN unique_violation THEN
        RETURN QUERY SELECT 'name_taken', NULL::integer, NULL::text, v_old;
        RETURN;
    END;

    -- A quota raised, a type reopened or let skip: those waiting may be offered more.
    PERFORM offer_waitlist(p_event);
    SELECT * INTO v_new FROM ticket_types t WHERE t.id = v_new.id;

    RETURN QUERY SELECT CASE WHEN p_type IS NULL THEN 'created' ELSE 'updated' END,
                        v_new.taken, coalesce(v_currency, v_event.currency), v_new;
END $$;
