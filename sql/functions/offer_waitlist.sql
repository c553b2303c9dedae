-- Offers p_event's tickets that came back to those waiting for them, before the public
-- can buy them again. Every function that gives tickets back or raises what can be sold
-- (a booking cancelled, a hold released or expired, a quota or capacity raised, a type
-- reopened, someone leaving the list) calls it in the same transaction, with the
-- event's row locked (FOR NO KEY UPDATE or stronger), which every change of a count and
-- of the list takes first: so no ticket is offered twice and none is sold meanwhile.
--
-- It starts from nothing reserved (waitlist_unreserve) and, type by type in the order
-- of each type's first waiting entry, takes every ticket of the type still on sale into
-- the type's reserve, then offers the reserve to the entries in order: each offer is a
-- hold of the entry's quantity in its customer's name, at the type's price of now,
-- running out after eventbook.waitlist_offer_seconds (a setting of the server's
-- connections; 3600 when unset), and a waitlist_offer mail through the outbox. An entry
-- that wants more than the reserve stops the offers of its type (unless the type lets
-- smaller entries skip ahead); what is left stays reserved, off sale, until more comes
-- back. A type whose sales window has not opened yet keeps what comes back without
-- offering it; one closed or whose sales have ended keeps nothing. An entry whose customer already has, in confirmed bookings and live holds, as
-- many tickets as the event's per-customer cap leaves with its quantity lapses instead
-- of being offered, and the next is considered. A type nobody waits for, one not on sale, or an event no longer open keeps
-- nothing reserved.
--
-- Afterwards, for every type with someone waiting, no ticket of it can be booked: what
-- book_tickets finds left under the type's quota and the event's capacity is none.
-- Returns the offers made. An event nobody waits for costs two index probes.

CREATE OR REPLACE FUNCTION offer_waitlist(p_event uuid) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_seconds integer := coalesce(
        nullif(current_setting('eventbook.waitlist_offer_seconds', true), '')::integer, 3600);
    v_event   events;
    v_open    boolean;
    v_type    record;
    v_entry   waitlist_entries;
    v_left    integer;
    v_free    integer;
    v_reserve integer;
    v_waiting integer;
    v_hold    uuid;
    v_has     integer;
    v_offers  integer := 0;
BEGIN
    IF NOT EXISTS (SELECT FROM waitlist_entries w
                    WHERE w.event_id = p_event AND w.status = 'waiting')
       AND NOT EXISTS (SELECT FROM ticket_types t
                        WHERE t.event_id = p_event AND t.reserved > 0) THEN
        RETURN 0;
    END IF;
    PERFORM waitlist_unreserve(p_event);
    SELECT * INTO v_event FROM events e WHERE e.id = p_event;
    v_open := v_event.status = 'scheduled' AND v_event.starts_at > now();
    v_left := v_event.available_tickets;

    FOR v_type IN
        SELECT t.id, t.quota, t.taken, t.price_cents, t.waitlist_allow_skip, t.waiting,
               t.status = 'on_sale' AND coalesce(t.sales_end > now(), true) AS selling,
               coalesce(t.sales_start <= now(), true) AS started
          FROM ticket_types t
          JOIN LATERAL (SELECT min(w.seq) AS first FROM waitlist_entries w
                         WHERE w.ticket_type_id = t.id AND w.status = 'waiting') q ON true
         WHERE t.event_id = p_event AND q.first IS NOT NULL
         ORDER BY q.first
    LOOP
        -- Closed, its sales over, or its event no longer open: nothing is kept for it.
        CONTINUE WHEN NOT (v_open AND v_type.selling);
        v_free := greatest(least(coalesce(v_type.quota - v_type.taken, v_left), v_left), 0);
        v_reserve := v_free;
        v_left := v_left - v_free;
        v_waiting := v_type.waiting;
        -- Before its sales window opens what came back is kept, not offered; the holds
        -- actor offers it once the window opens (offer_due_waitlists).
        WHILE v_reserve > 0 AND v_type.started LOOP
            IF v_type.waitlist_allow_skip THEN
                SELECT * INTO v_entry FROM waitlist_entries w
                 WHERE w.ticket_type_id = v_type.id AND w.status = 'waiting'
                   AND w.quantity <= v_reserve
                 ORDER BY w.seq LIMIT 1;
            ELSE
                SELECT * INTO v_entry FROM waitlist_entries w
                 WHERE w.ticket_type_id = v_type.id AND w.status = 'waiting'
                 ORDER BY w.seq LIMIT 1;
            END IF;
            EXIT WHEN NOT FOUND OR v_entry.quantity > v_reserve;
            IF v_event.max_tickets_per_customer IS NOT NULL THEN
                SELECT coalesce((SELECT sum(b.quantity) FROM bookings b
                                  WHERE b.event_id = p_event AND b.user_id = v_entry.user_id
                                    AND b.status = 'confirmed'), 0)
                     + coalesce((SELECT sum(h.quantity) FROM holds h
                                  WHERE h.event_id = p_event AND h.user_id = v_entry.user_id
                                    AND h.status = 'held'), 0)
                  INTO v_has;
                IF v_has + v_entry.quantity > v_event.max_tickets_per_customer THEN
                    UPDATE waitlist_entries w SET status = 'lapsed', ended_at = now()
                     WHERE w.id = v_entry.id;
                    v_waiting := v_waiting - 1;
                    CONTINUE;
                END IF;
            END IF;

            INSERT INTO holds (event_id, user_id, quantity, total_cents, currency, expires_at)
            VALUES (p_event, v_entry.user_id, v_entry.quantity,
                    v_entry.quantity::bigint * v_type.price_cents, v_event.currency,
                    now() + make_interval(secs => v_seconds))
            RETURNING holds.id INTO v_hold;
            INSERT INTO hold_items (hold_id, ticket_type_id, quantity, price_cents)
            VALUES (v_hold, v_type.id, v_entry.quantity, v_type.price_cents);
            UPDATE waitlist_entries w SET status = 'offered', hold_id = v_hold, offered_at = now()
             WHERE w.id = v_entry.id;
            INSERT INTO outbox (topic, kind, payload)
            VALUES ('confirmations', 'waitlist_offer',
                    jsonb_build_object('hold_id', v_hold, 'entry_id', v_entry.id));
            v_reserve := v_reserve - v_entry.quantity;
            v_waiting := v_waiting - 1;
            v_offers := v_offers + 1;
        END LOOP;
        IF v_reserve > 0 AND NOT EXISTS (SELECT FROM waitlist_entries w
                                          WHERE w.ticket_type_id = v_type.id
                                            AND w.status = 'waiting') THEN
            -- Everyone waiting has an offer: what is left is for sale again.
            v_left := v_left + v_reserve;
            v_free := v_free - v_reserve;
            v_reserve := 0;
        END IF;
        IF v_free <> 0 OR v_waiting <> v_type.waiting THEN
            -- The offered tickets stay taken, now as holds; the rest as the reserve.
            UPDATE ticket_types t
               SET taken = t.taken + v_free, reserved = v_reserve, waiting = v_waiting
             WHERE t.id = v_type.id;
        END IF;
    END LOOP;

    IF v_left <> v_event.available_tickets THEN
        UPDATE events e SET available_tickets = v_left WHERE e.id = p_event;
    END IF;
    RETURN v_offers;
END $$;
