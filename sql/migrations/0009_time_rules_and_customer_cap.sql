-- Time rules and a per-customer ticket cap, decided where the other booking rules are.
--
-- Time: a booking cannot be cancelled once its event has started (its tickets would go
-- back to an event nobody can book any more), and an event cannot be changed or
-- cancelled once it has ended (every attendee would be mailed about the past). An event
-- without ends_at counts as ended when it starts. Each is decided under the event's row
-- lock, in the transaction that makes the change, so a concurrent change of starts_at or
-- ends_at cannot slip between the check and the change.
--
-- Cap: max_tickets_per_customer (NULL: none) bounds the tickets one customer holds in
-- confirmed bookings of the event. book_tickets and book_tickets_batch enforce it the
-- same way: after the event's row is locked, a statement of its own sums the customer's
-- confirmed bookings (bookings_attendees serves it). Its snapshot is taken after the
-- lock, so it sees every booking committed before, and any later booking of the event
-- waits for this transaction. A condition inside the decrementing UPDATE would not do:
-- after waiting for the lock, PostgreSQL rechecks such a condition against the new event
-- row but reads bookings with the statement's older snapshot, missing the booking that
-- was committed meanwhile. Events without a cap pay nothing: no sum is taken.

ALTER TABLE events
    ADD COLUMN max_tickets_per_customer integer
        CONSTRAINT events_customer_cap_in_range
        CHECK (max_tickets_per_customer BETWEEN 1 AND 1000000),
    -- A booking the per-booking maximum allows must fit under the cap, or the event
    -- would advertise bookings it always refuses.
    ADD CONSTRAINT events_customer_cap_fits_a_booking
        CHECK (max_tickets_per_customer >= max_tickets_per_booking);


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


CREATE OR REPLACE FUNCTION book_tickets_batch(
    p_events       uuid[],
    p_users        uuid[],
    p_quantities   integer[],
    p_keys         text[],
    p_fingerprints text[],
    p_request_ids  text[]
) RETURNS TABLE (
    outcome             text,
    available           integer,
    id                  uuid,
    event_id            uuid,
    user_id             uuid,
    quantity            integer,
    status              text,
    confirmation_status text,
    confirmed_at        timestamptz,
    created_at          timestamptz
)
LANGUAGE plpgsql
SET lock_timeout = '100ms'
AS $$
#variable_conflict use_column
DECLARE
    v_count    integer := coalesce(cardinality(p_events), 0);
    -- per event, in id order: id, open for booking, per-booking maximum, count left,
    -- per-customer cap
    v_ids      uuid[];
    v_open     boolean[];
    v_max      integer[];
    v_left     integer[];
    v_before   integer[];
    v_cap      integer[];
    v_capped   boolean;
    -- per request: its event's position in v_ids (NULL: no such event), and the decision
    v_at       integer[];
    -- per request on a capped event: the first request of the same event and customer,
    -- whose v_held entry counts what that customer holds, this batch's bookings included
    v_pair     integer[];
    v_held     integer[];
    k          integer;
    v_quantity integer;
    v_booking  bookings;
    v_id       uuid;
    v_outcomes   text[]    := array_fill(NULL::text, ARRAY[v_count]);
    v_availables integer[] := array_fill(NULL::integer, ARRAY[v_count]);
    v_bookings   uuid[]    := array_fill(NULL::uuid, ARRAY[v_count]);
    v_later      boolean[] := array_fill(false, ARRAY[v_count]);
BEGIN
    IF coalesce(cardinality(p_users), 0) <> v_count
       OR coalesce(cardinality(p_quantities), 0) <> v_count
       OR coalesce(cardinality(p_keys), 0) <> v_count
       OR coalesce(cardinality(p_fingerprints), 0) <> v_count
       OR coalesce(cardinality(p_request_ids), 0) <> v_count THEN
        RAISE EXCEPTION 'book_tickets_batch: the request arrays differ in length';
    END IF;

    -- The batch's locks, each held until the commit.
    SELECT coalesce(array_agg(e.id ORDER BY e.id), '{}'),
           array_agg(e.status = 'scheduled' AND e.starts_at > now() ORDER BY e.id),
           array_agg(e.max_tickets_per_booking ORDER BY e.id),
           array_agg(e.available_tickets ORDER BY e.id),
           array_agg(e.max_tickets_per_customer ORDER BY e.id),
           coalesce(bool_or(e.max_tickets_per_customer IS NOT NULL), false)
      INTO v_ids, v_open, v_max, v_left, v_cap, v_capped
      FROM (SELECT * FROM events e WHERE e.id = ANY (p_events) ORDER BY e.id FOR UPDATE) e;
    v_before := v_left;

    SELECT array_agg(d.k ORDER BY r.n) INTO v_at
      FROM unnest(p_events) WITH ORDINALITY AS r(event_id, n)
      LEFT JOIN unnest(v_ids) WITH ORDINALITY AS d(event_id, k) ON d.event_id = r.event_id;

    IF v_capped THEN
        -- After the locks, with a snapshot newer than them (see the top); only the
        -- requests of capped events look their customer up.
        SELECT array_agg(r.pair ORDER BY r.n), array_agg(coalesce(h.held, 0) ORDER BY r.n)
          INTO v_pair, v_held
          FROM (SELECT u.n, u.event_id, u.user_id, v_cap[v_at[u.n::integer]] AS cap,
                       min(u.n) OVER (PARTITION BY u.event_id, u.user_id)::integer AS pair
                  FROM unnest(p_events, p_users) WITH ORDINALITY AS u(event_id, user_id, n)) r
          LEFT JOIN LATERAL (
                SELECT sum(b.quantity)::integer AS held FROM bookings b
                 WHERE r.cap IS NOT NULL AND b.event_id = r.event_id
                   AND b.user_id = r.user_id AND b.status = 'confirmed') h ON true;
    END IF;

    FOR i IN 1 .. v_count LOOP
        v_quantity := p_quantities[i];
        k := v_at[i];
        IF p_keys[i] IS NOT NULL THEN
            SELECT * INTO v_booking FROM bookings b
             WHERE b.user_id = p_users[i] AND b.idempotency_key = p_keys[i];
            IF FOUND THEN
                v_outcomes[i] := CASE WHEN v_booking.request_fingerprint = p_fingerprints[i]
                                      THEN 'replayed' ELSE 'key_reused' END;
                v_bookings[i] := v_booking.id;
                CONTINUE;
            END IF;
        END IF;

        IF k IS NULL THEN
            v_outcomes[i] := 'event_not_found';
        ELSIF NOT v_open[k] THEN
            v_outcomes[i] := 'event_not_bookable';
            v_availables[i] := v_left[k];
        ELSIF v_quantity > v_max[k] THEN
            v_outcomes[i] := 'too_many_tickets';
            v_availables[i] := v_max[k];
        ELSIF v_quantity > v_left[k] THEN
            v_outcomes[i] := 'sold_out';
            v_availables[i] := v_left[k];
        ELSIF v_cap[k] IS NOT NULL AND v_held[v_pair[i]] + v_quantity > v_cap[k] THEN
            v_outcomes[i] := 'customer_limit_reached';
            v_availables[i] := greatest(v_cap[k] - v_held[v_pair[i]], 0);
        ELSIF p_keys[i] IS NULL THEN
            v_left[k] := v_left[k] - v_quantity;
            v_outcomes[i] := 'created';
            v_availables[i] := v_left[k];
            v_bookings[i] := gen_random_uuid();
            v_later[i] := true;
        ELSE
            -- Inserted now, so a later request in this batch with the same key finds it,
            -- and ON CONFLICT meets a twin committed by a concurrent call.
            INSERT INTO bookings (event_id, user_id, quantity, idempotency_key,
                                  request_fingerprint)
            VALUES (p_events[i], p_users[i], v_quantity, p_keys[i], p_fingerprints[i])
            ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING bookings.id INTO v_id;
            IF FOUND THEN
                v_left[k] := v_left[k] - v_quantity;
                v_outcomes[i] := 'created';
                v_availables[i] := v_left[k];
                v_bookings[i] := v_id;
            ELSE
                SELECT * INTO v_booking FROM bookings b
                 WHERE b.user_id = p_users[i] AND b.idempotency_key = p_keys[i];
                v_outcomes[i] := CASE WHEN v_booking.request_fingerprint = p_fingerprints[i]
                                      THEN 'replayed' ELSE 'key_reused' END;
                v_bookings[i] := v_booking.id;
            END IF;
        END IF;
        IF v_cap[k] IS NOT NULL AND v_outcomes[i] = 'created' THEN
            v_held[v_pair[i]] := v_held[v_pair[i]] + v_quantity;
        END IF;
    END LOOP;

    -- The constraint events_tickets_in_range would refuse a negative count here.
    UPDATE events e SET available_tickets = c.left_now
      FROM unnest(v_ids, v_left, v_before) AS c(id, left_now, left_before)
     WHERE e.id = c.id AND c.left_now <> c.left_before;

    RETURN QUERY
    WITH request AS (
        SELECT *
          FROM unnest(p_events, p_users, p_quantities, p_fingerprints, p_request_ids,
                      v_outcomes, v_availables, v_bookings, v_later)
               WITH ORDINALITY AS r(event_id, user_id, quantity, fingerprint, request_id,
                                    outcome, available, booking_id, later, n)
    ), made AS (
        INSERT INTO bookings (id, event_id, user_id, quantity, request_fingerprint)
        SELECT r.booking_id, r.event_id, r.user_id, r.quantity, r.fingerprint
          FROM request r WHERE r.later
        RETURNING bookings.*
    ), queued AS (
        -- One statement, so the outbox trigger's NOTIFY fires once for the batch.
        INSERT INTO outbox (topic, kind, payload, request_id)
        SELECT 'confirmations', 'booking_confirmed',
               jsonb_build_object('booking_id', r.booking_id), r.request_id
          FROM request r WHERE r.outcome = 'created'
         ORDER BY r.n
    )
    -- made's rows are not visible in bookings within this statement, the others are.
    SELECT r.outcome, r.available,
           coalesce(m.id, b.id), coalesce(m.event_id, b.event_id),
           coalesce(m.user_id, b.user_id), coalesce(m.quantity, b.quantity),
           coalesce(m.status, b.status), coalesce(m.confirmation_status, b.confirmation_status),
           coalesce(m.confirmed_at, b.confirmed_at), coalesce(m.created_at, b.created_at)
      FROM request r
      LEFT JOIN made m ON m.id = r.booking_id
      LEFT JOIN bookings b ON b.id = r.booking_id AND NOT r.later
     ORDER BY r.n;
END $$;


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
    v_per_booking integer;
    v_per_customer integer;
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
    v_per_booking := COALESCE((p_changes ->> 'max_tickets_per_booking')::integer,
                              v_old.max_tickets_per_booking);
    v_per_customer := CASE WHEN p_changes ? 'max_tickets_per_customer'
                           THEN (p_changes ->> 'max_tickets_per_customer')::integer
                           ELSE v_old.max_tickets_per_customer END;
    IF v_per_customer < v_per_booking THEN
        RETURN QUERY SELECT 'customer_cap_below_booking_max', NULL::integer, v_old;
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
