-- Many bookings of one event decided in one call and one commit: the hot-event path.
--
-- Every booking of an event locks the event's row until its transaction commits, so one
-- booking at a time costs a commit each and a hot event is capped near 1 / commit
-- latency. The server coalesces the requests for one event that arrive while a call for
-- it is in flight and hands them here together: the row is locked once, each request is
-- decided in arrival order against the remaining count, and all of them commit at once.
-- Each request still gets its own outcome (the same codes as book_tickets), its own
-- booking and its own outbox row carrying its own request id.
--
-- The arrays are parallel, one element per request. Requests with an Idempotency-Key
-- are inserted one at a time inside the loop, so a later request in the batch with the
-- same key finds the booking, and ON CONFLICT meets a twin committed by a concurrent
-- call for another event; the others are inserted in one statement at the end.

CREATE FUNCTION book_tickets_batch(
    p_event        uuid,
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
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_count    integer := coalesce(cardinality(p_users), 0);
    v_event    events;
    v_found    boolean;
    v_left     integer;
    v_quantity integer;
    v_booking  bookings;
    v_id       uuid;
    -- per request: outcome, available count to report, booking id, made in the last insert
    v_outcomes  text[]    := array_fill(NULL::text, ARRAY[v_count]);
    v_availables integer[] := array_fill(NULL::integer, ARRAY[v_count]);
    v_bookings  uuid[]    := array_fill(NULL::uuid, ARRAY[v_count]);
    v_later     boolean[] := array_fill(false, ARRAY[v_count]);
BEGIN
    IF coalesce(cardinality(p_quantities), 0) <> v_count
       OR coalesce(cardinality(p_keys), 0) <> v_count
       OR coalesce(cardinality(p_fingerprints), 0) <> v_count
       OR coalesce(cardinality(p_request_ids), 0) <> v_count THEN
        RAISE EXCEPTION 'book_tickets_batch: the request arrays differ in length';
    END IF;

    -- The one lock of the whole batch; it is held until the commit.
    SELECT * INTO v_event FROM events e WHERE e.id = p_event FOR UPDATE;
    v_found := FOUND;
    v_left := v_event.available_tickets;

    FOR i IN 1 .. v_count LOOP
        v_quantity := p_quantities[i];
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

        IF NOT v_found THEN
            v_outcomes[i] := 'event_not_found';
        ELSIF v_event.status <> 'scheduled' OR v_event.starts_at <= now() THEN
            v_outcomes[i] := 'event_not_bookable';
            v_availables[i] := v_left;
        ELSIF v_quantity > v_event.max_tickets_per_booking THEN
            v_outcomes[i] := 'too_many_tickets';
            v_availables[i] := v_event.max_tickets_per_booking;
        ELSIF v_quantity > v_left THEN
            v_outcomes[i] := 'sold_out';
            v_availables[i] := v_left;
        ELSIF p_keys[i] IS NULL THEN
            v_left := v_left - v_quantity;
            v_outcomes[i] := 'created';
            v_availables[i] := v_left;
            v_bookings[i] := gen_random_uuid();
            v_later[i] := true;
        ELSE
            INSERT INTO bookings (event_id, user_id, quantity, idempotency_key,
                                  request_fingerprint)
            VALUES (p_event, p_users[i], v_quantity, p_keys[i], p_fingerprints[i])
            ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING bookings.id INTO v_id;
            IF FOUND THEN
                v_left := v_left - v_quantity;
                v_outcomes[i] := 'created';
                v_availables[i] := v_left;
                v_bookings[i] := v_id;
            ELSE
                -- A twin with this key, booked by a concurrent call, committed first.
                SELECT * INTO v_booking FROM bookings b
                 WHERE b.user_id = p_users[i] AND b.idempotency_key = p_keys[i];
                v_outcomes[i] := CASE WHEN v_booking.request_fingerprint = p_fingerprints[i]
                                      THEN 'replayed' ELSE 'key_reused' END;
                v_bookings[i] := v_booking.id;
            END IF;
        END IF;
    END LOOP;

    -- The constraint events_tickets_in_range would refuse a negative count here.
    IF v_found AND v_left <> v_event.available_tickets THEN
        UPDATE events e SET available_tickets = v_left WHERE e.id = p_event;
    END IF;

    RETURN QUERY
    WITH request AS (
        SELECT *
          FROM unnest(p_users, p_quantities, p_fingerprints, p_request_ids, v_outcomes,
                      v_availables, v_bookings, v_later)
               WITH ORDINALITY AS r(user_id, quantity, fingerprint, request_id, outcome,
                                    available, booking_id, later, n)
    ), made AS (
        INSERT INTO bookings (id, event_id, user_id, quantity, request_fingerprint)
        SELECT r.booking_id, p_event, r.user_id, r.quantity, r.fingerprint
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
