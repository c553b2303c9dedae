-- The booking rule: whether each request gets its tickets, decided in one call and one
-- commit for every request in it. Deciding one booking is a call with arrays of one.
--
-- The arrays are parallel, one element per request, in arrival order. Each event of the
-- call is locked once, in id order (so two calls never wait on each other in a cycle),
-- and each request is decided in arrival order against its own event's count. Each
-- request gets its own outcome, its own booking and its own outbox row carrying its own
-- request id; all of them commit at once. Many requests per call is what lets a hot
-- event go past one booking per commit, and bookings spread over many events share a
-- commit too.
--
-- Outcomes, in the order they are decided: replayed / key_reused (the customer's
-- Idempotency-Key already has a booking, with the same request or not), event_not_found,
-- event_not_bookable (cancelled, or started), too_many_tickets (more than the event's
-- per-booking maximum), sold_out, customer_limit_reached, created. Each row carries
-- available: the tickets left on the event (created, sold_out, event_not_bookable);
-- allowed: the per-booking maximum (too_many_tickets) or the tickets the customer may
-- still book (customer_limit_reached); and the booking (created, replayed, key_reused).
--
-- p_lock_timeout bounds the wait for an event's lock (for the rest of the caller's
-- transaction; NULL: no bound). A lock held long by someone else (a cancel of a large
-- event) must not stall the bookings of other events: the server sends a coalesced call
-- with a short bound, and when it fails decides each of its requests alone, unbounded,
-- so each waits for its own event only.
--
-- Per-customer cap: max_tickets_per_customer (NULL: none) bounds the tickets one
-- customer holds in confirmed bookings of the event. After the events' rows are locked,
-- a statement of its own sums the customer's confirmed bookings (bookings_attendees
-- serves it). Its snapshot is taken after the locks, so it sees every booking committed
-- before, and any later booking of the event waits for this transaction. A condition
-- inside a decrementing UPDATE would not do: after waiting for the lock, PostgreSQL
-- rechecks such a condition against the new event row but reads bookings with the
-- statement's older snapshot, missing the booking that was committed meanwhile. Events
-- without a cap pay nothing: no sum is taken.
--
-- Requests with an Idempotency-Key are inserted one at a time inside the loop, so a
-- later request in the call with the same key finds the booking, and ON CONFLICT meets a
-- twin committed by a concurrent call; the others are inserted in one statement at the
-- end.

CREATE OR REPLACE FUNCTION book_tickets(
    p_events       uuid[],
    p_users        uuid[],
    p_quantities   integer[],
    p_keys         text[],
    p_fingerprints text[],
    p_request_ids  text[],
    p_lock_timeout text
) RETURNS TABLE (
    outcome             text,
    available           integer,
    allowed             integer,
    id                  uuid,
    event_id            uuid,
    user_id             uuid,
    quantity            integer,
    status              text,
    confirmation_status text,
    confirmed_at        timestamptz,
    created_at          timestamptz
)
LANGUAGE plpgsql AS $$
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
    v_alloweds   integer[] := array_fill(NULL::integer, ARRAY[v_count]);
    v_bookings   uuid[]    := array_fill(NULL::uuid, ARRAY[v_count]);
    v_later      boolean[] := array_fill(false, ARRAY[v_count]);
BEGIN
    IF coalesce(cardinality(p_users), 0) <> v_count
       OR coalesce(cardinality(p_quantities), 0) <> v_count
       OR coalesce(cardinality(p_keys), 0) <> v_count
       OR coalesce(cardinality(p_fingerprints), 0) <> v_count
       OR coalesce(cardinality(p_request_ids), 0) <> v_count THEN
        RAISE EXCEPTION 'book_tickets: the request arrays differ in length';
    END IF;
    IF p_lock_timeout IS NOT NULL THEN
        PERFORM set_config('lock_timeout', p_lock_timeout, true);
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
            v_alloweds[i] := v_max[k];
        ELSIF v_quantity > v_left[k] THEN
            v_outcomes[i] := 'sold_out';
            v_availables[i] := v_left[k];
        ELSIF v_cap[k] IS NOT NULL AND v_held[v_pair[i]] + v_quantity > v_cap[k] THEN
            v_outcomes[i] := 'customer_limit_reached';
            v_alloweds[i] := greatest(v_cap[k] - v_held[v_pair[i]], 0);
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
                      v_outcomes, v_availables, v_alloweds, v_bookings, v_later)
               WITH ORDINALITY AS r(event_id, user_id, quantity, fingerprint, request_id,
                                    outcome, available, allowed, booking_id, later, n)
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
    SELECT r.outcome, r.available, r.allowed,
           coalesce(m.id, b.id), coalesce(m.event_id, b.event_id),
           coalesce(m.user_id, b.user_id), coalesce(m.quantity, b.quantity),
           coalesce(m.status, b.status), coalesce(m.confirmation_status, b.confirmation_status),
           coalesce(m.confirmed_at, b.confirmed_at), coalesce(m.created_at, b.created_at)
      FROM request r
      LEFT JOIN made m ON m.id = r.booking_id
      LEFT JOIN bookings b ON b.id = r.booking_id AND NOT r.later
     ORDER BY r.n;
END $$;
