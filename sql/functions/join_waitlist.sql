-- A customer joins the waiting list of a ticket type that is sold out (nothing of it can
-- be booked now), for p_quantity tickets. Under the event's row lock, like every change
-- of the counts and of the list, so "sold out" holds at the moment of joining.
--
-- Outcomes: created; event_not_found; event_not_bookable (cancelled or started);
-- ticket_type_required (none named and the event has several); unknown_ticket_type;
-- ticket_type_not_on_sale; too_many_tickets (over the type's or the event's per-booking
-- maximum; allowed says which); customer_limit_reached (the quantity with what the
-- customer has booked and holds would pass the event's per-customer cap; allowed: what
-- is left of it); tickets_available (available: how many can be booked now);
-- already_waiting (the customer has a live entry for the type: entry is it). Each row
-- carries the entry (created, already_waiting) and, once created, its position.

CREATE OR REPLACE FUNCTION join_waitlist(
    p_event uuid, p_type uuid, p_user uuid, p_quantity integer
) RETURNS TABLE (
    outcome text, available integer, allowed integer, entry waitlist_entries, "position" integer
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_event events;
    v_type  ticket_types;
    v_entry waitlist_entries;
    v_has   integer;
BEGIN
    SELECT * INTO v_event FROM events e WHERE e.id = p_event FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'event_not_found', NULL::integer, NULL::integer,
                            NULL::waitlist_entries, NULL::integer;
        RETURN;
    ELSIF v_event.status <> 'scheduled' OR v_event.starts_at <= now() THEN
        RETURN QUERY SELECT 'event_not_bookable', NULL::integer, NULL::integer,
                            NULL::waitlist_entries, NULL::integer;
        RETURN;
    END IF;
    IF p_type IS NULL THEN
        SELECT * INTO v_type FROM ticket_types t WHERE t.event_id = p_event;
        IF (SELECT count(*) FROM ticket_types t WHERE t.event_id = p_event) > 1 THEN
            RETURN QUERY SELECT 'ticket_type_required', NULL::integer, NULL::integer,
                                NULL::waitlist_entries, NULL::integer;
            RETURN;
        END IF;
    ELSE
        SELECT * INTO v_type FROM ticket_types t WHERE t.id = p_type AND t.event_id = p_event;
        IF NOT FOUND THEN
            RETURN QUERY SELECT 'unknown_ticket_type', NULL::integer, NULL::integer,
                                NULL::waitlist_entries, NULL::integer;
            RETURN;
        END IF;
    END IF;
    IF NOT (v_type.status = 'on_sale' AND coalesce(v_type.sales_start <= now(), true)
            AND coalesce(v_type.sales_end > now(), true)) THEN
        RETURN QUERY SELECT 'ticket_type_not_on_sale', NULL::integer, NULL::integer,
                            NULL::waitlist_entries, NULL::integer;
        RETURN;
    ELSIF p_quantity > v_type.max_per_booking THEN
        RETURN QUERY SELECT 'too_many_tickets', NULL::integer, v_type.max_per_booking,
                            NULL::waitlist_entries, NULL::integer;
        RETURN;
    ELSIF p_quantity > v_event.max_tickets_per_booking THEN
        RETURN QUERY SELECT 'too_many_tickets', NULL::integer, v_event.max_tickets_per_booking,
                            NULL::waitlist_entries, NULL::integer;
        RETURN;
    END IF;

    SELECT * INTO v_entry FROM waitlist_entries w
     WHERE w.ticket_type_id = v_type.id AND w.user_id = p_user
       AND w.status IN ('waiting', 'offered');
    IF FOUND THEN
        RETURN QUERY SELECT 'already_waiting', NULL::integer, NULL::integer, v_entry,
                            NULL::integer;
        RETURN;
    END IF;
    IF least(coalesce(v_type.quota - v_type.taken, v_event.available_tickets),
             v_event.available_tickets) > 0 THEN
        RETURN QUERY SELECT 'tickets_available',
                            least(coalesce(v_type.quota - v_type.taken,
                                           v_event.available_tickets),
                                  v_event.available_tickets),
                            NULL::integer, NULL::waitlist_entries, NULL::integer;
        RETURN;
    END IF;
    IF v_event.max_tickets_per_customer IS NOT NULL THEN
        SELECT coalesce((SELECT sum(b.quantity) FROM bookings b
                          WHERE b.event_id = p_event AND b.user_id = p_user
                            AND b.status = 'confirmed'), 0)
             + coalesce((SELECT sum(h.quantity) FROM holds h
                          WHERE h.event_id = p_event AND h.user_id = p_user
                            AND h.status = 'held'), 0)
          INTO v_has;
        IF v_has + p_quantity > v_event.max_tickets_per_customer THEN
            RETURN QUERY SELECT 'customer_limit_reached', NULL::integer,
                                greatest(v_event.max_tickets_per_customer - v_has, 0),
                                NULL::waitlist_entries, NULL::integer;
            RETURN;
        END IF;
    END IF;

    INSERT INTO waitlist_entries (event_id, ticket_type_id, user_id, quantity)
    VALUES (p_event, v_type.id, p_user, p_quantity)
    RETURNING * INTO v_entry;
    UPDATE ticket_types t SET waiting = t.waiting + 1 WHERE t.id = v_type.id;
    -- Last in line: its position is the type's waiting count, known here under the lock
    -- (counting the entries ahead costs a read of each on a long list).
    RETURN QUERY SELECT 'created', NULL::integer, NULL::integer, v_entry, v_type.waiting + 1;
END $$;
