-- The booking rule: whether each request gets its tickets, as a booking or as a hold,
-- decided in one call and one commit for every request in it. Deciding one request is
-- a call with arrays of one.
--
-- The request arrays are parallel, one element per request, in arrival order: event,
-- customer, hold (true: a hold that runs out after p_hold_seconds; false: a booking),
-- its number of items, Idempotency-Key, fingerprint, request id. The items of all
-- requests follow in the item arrays, request after request: ticket type (NULL: the
-- event's only type) and quantity.
--
-- Each event of the call is locked once, in id order (so two calls never wait on each
-- other in a cycle), and each request is decided in arrival order against its own
-- event's and types' counts. Each request gets its own outcome, its own booking or hold
-- and its own outbox row carrying its own request id; all of them commit at once. Many
-- requests per call is what lets a hot event go past one booking per commit, and
-- bookings spread over many events share a commit too.
--
-- Counting rule (see migration 0003): the event's capacity - available_tickets and each
-- type's taken are tickets sold plus held, changed only under the event's row lock. The
-- lock is FOR NO KEY UPDATE: it excludes every other change of the event's tickets and
-- the organizer's changes (which lock FOR UPDATE), but not a hold's confirmation, which
-- changes no count and locks the event FOR KEY SHARE to keep it from being cancelled
-- under it.
--
-- Outcomes, in the order they are decided: replayed / key_reused (the customer's
-- Idempotency-Key already has a booking, or a hold, with the same request or not),
-- event_not_found, event_not_bookable (cancelled, or started), then per item
-- ticket_type_required (no type named and the event has several), unknown_ticket_type
-- (not a type of this event), ticket_type_not_on_sale (closed, or outside its sales
-- window), too_many_tickets (more than the type's per-booking maximum); then for the
-- request too_many_tickets (more than the event's per-booking maximum, all items
-- together), sold_out (per item against its type's quota, then all items against the
-- event), customer_limit_reached, created. Each row carries
-- available: the tickets left (created, event_not_bookable: on the event; sold_out: on
-- the type named in ticket_type_id, or on the event when that is NULL);
-- allowed: the per-booking maximum (too_many_tickets: the type's when ticket_type_id is
-- set, else the event's) or the tickets the customer may still take
-- (customer_limit_reached); ticket_type_id: the type an item-level refusal is about;
-- and the booking or hold (created, replayed, key_reused), with its items.
--
-- p_lock_timeout bounds the wait for an event's lock (for the rest of the caller's
-- transaction; NULL: no bound). A lock held long by someone else (a cancel of a large
-- event) must not stall the bookings of other events: the server sends a coalesced call
-- with a short bound, and when it fails decides each of its requests alone, unbounded,
-- so each waits for its own event only.
--
-- Per-customer cap: max_tickets_per_customer (NULL: none) bounds the tickets one
-- customer has in confirmed bookings and live holds of the event. After the events' rows
-- are locked, a statement of its own sums them. Its snapshot is taken after the locks,
-- so it sees every booking and hold committed before, and any later one waits for this
-- transaction. A condition inside a decrementing UPDATE would not do: after waiting for
-- the lock, PostgreSQL rechecks such a condition against the new event row but reads
-- bookings with the statement's older snapshot, missing the booking that was committed
-- meanwhile. Events without a cap pay nothing: no sum is taken.
--
-- Requests with an Idempotency-Key are inserted one at a time inside the loop, so a
-- later request in the call with the same key finds the booking, and ON CONFLICT meets a
-- twin committed by a concurrent call; the others are inserted in one statement at the
-- end.

CREATE OR REPLACE FUNCTION book_tickets(
    p_events          uuid[],
    p_users           uuid[],
    p_holds           boolean[],
    p_item_counts     integer[],
    p_keys            text[],
    p_fingerprints    text[],
    p_request_ids     text[],
    p_item_types      uuid[],
    p_item_quantities integer[],
    p_hold_seconds    integer,
    p_lock_timeout    text
) RETURNS TABLE (
    outcome             text,
    available           integer,
    allowed             integer,
    ticket_type_id      uuid,
    id                  uuid,
    event_id            uuid,
    user_id             uuid,
    quantity            integer,
    status              text,
    total_cents         bigint,
    currency            text,
    items               jsonb,
    created_at          timestamptz,
    -- a booking's
    confirmation_status text,
    confirmed_at        timestamptz,
    payment_reference   text,
    hold_id             uuid,
    -- a hold's
    expires_at          timestamptz,
    booking_id          uuid
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_count    integer := coalesce(cardinality(p_events), 0);
    v_items    integer := coalesce(cardinality(p_item_types), 0);
    -- per event, in id order: id, open for booking, per-booking maximum, count left,
    -- per-customer cap, currency, its only ticket type (NULL: it has several)
    v_ids      uuid[];
    v_open     boolean[];
    v_max      integer[];
    v_left     integer[];
    v_before   integer[];
    v_cap      integer[];
    v_currency text[];
    v_only     uuid[];
    v_capped   boolean;
    -- per ticket type of the batch's events, in id order: id, event, on sale now,
    -- per-booking maximum, tickets left under its quota (NULL: no quota), price, and the
    -- tickets this call takes of it
    t_ids      uuid[];
    t_event    uuid[];
    t_open     boolean[];
    t_max      integer[];
    t_left     integer[];
    t_added    integer[];
    t_price    integer[];
    t_name     text[];
    t_created  timestamptz[];
    -- per item: its type's position in t_ids, once resolved
    v_item_at  integer[] := array_fill(NULL::integer, ARRAY[v_items]);
    -- per request: its event's position in v_ids (NULL: no such event), and the decision
    v_at       integer[];
    -- per request on a capped event: the first request of the same event and customer,
    -- whose v_held entry counts what that customer has, this batch's included
    v_pair     integer[];
    v_held     integer[];
    k          integer;
    t          integer;
    v_type     uuid;
    v_first    integer := 1;
    v_last     integer;
    v_total    integer;
    v_cents    bigint;
    v_refused  boolean;
    v_found_id uuid;
    v_found_fp text;
    v_id       uuid;
    v_outcomes   text[]    := array_fill(NULL::text, ARRAY[v_count]);
    v_availables integer[] := array_fill(NULL::integer, ARRAY[v_count]);
    v_alloweds   integer[] := array_fill(NULL::integer, ARRAY[v_count]);
    v_types      uuid[]    := array_fill(NULL::uuid, ARRAY[v_count]);
    v_records    uuid[]    := array_fill(NULL::uuid, ARRAY[v_count]);
    v_totals     integer[] := array_fill(NULL::integer, ARRAY[v_count]);
    v_amounts    bigint[]  := array_fill(NULL::bigint, ARRAY[v_count]);
    v_later      boolean[] := array_fill(false, ARRAY[v_count]);
    v_firsts     integer[] := array_fill(NULL::integer, ARRAY[v_count]);
    v_items_of   jsonb[]   := array_fill(NULL::jsonb, ARRAY[v_count]);
    v_json       jsonb;
    -- per item: the request it belongs to
    v_item_req   integer[];
    v_holding    boolean := coalesce(true = ANY (p_holds), false);
    v_booked     boolean := false;
    -- the events of the call whose organizer has an endpoint wanting booking.created
    v_hooked     uuid[];
    v_expires    timestamptz := now() + make_interval(secs => p_hold_seconds);
BEGIN
    IF coalesce(cardinality(p_users), 0) <> v_count
       OR coalesce(cardinality(p_holds), 0) <> v_count
       OR coalesce(cardinality(p_item_counts), 0) <> v_count
       OR coalesce(cardinality(p_keys), 0) <> v_count
       OR coalesce(cardinality(p_fingerprints), 0) <> v_count
       OR coalesce(cardinality(p_request_ids), 0) <> v_count
       OR coalesce(cardinality(p_item_quantities), 0) <> v_items
       OR (SELECT coalesce(sum(c), 0) FROM unnest(p_item_counts) c) <> v_items
       OR EXISTS (SELECT FROM unnest(p_item_counts) c WHERE c IS NULL OR c < 1) THEN
        RAISE EXCEPTION 'book_tickets: the request and item arrays do not match';
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
           array_agg(e.currency ORDER BY e.id),
           coalesce(bool_or(e.max_tickets_per_customer IS NOT NULL), false)
      INTO v_ids, v_open, v_max, v_left, v_cap, v_currency, v_capped
      FROM (SELECT * FROM events e WHERE e.id = ANY (p_events) ORDER BY e.id
               FOR NO KEY UPDATE) e;
    v_before := v_left;

    -- Their ticket types, read under the events' locks, which every change of a type
    -- takes first.
    SELECT coalesce(array_agg(tt.id ORDER BY tt.id), '{}'),
           array_agg(tt.event_id ORDER BY tt.id),
           array_agg(tt.status = 'on_sale' AND coalesce(tt.sales_start <= now(), true)
                     AND coalesce(tt.sales_end > now(), true) ORDER BY tt.id),
           array_agg(tt.max_per_booking ORDER BY tt.id),
           array_agg(tt.quota - tt.taken ORDER BY tt.id),
           array_agg(tt.price_cents ORDER BY tt.id),
           array_agg(tt.name ORDER BY tt.id),
           array_agg(tt.created_at ORDER BY tt.id)
      INTO t_ids, t_event, t_open, t_max, t_left, t_price, t_name, t_created
      FROM ticket_types tt WHERE tt.event_id = ANY (v_ids);
    t_added := array_fill(0, ARRAY[cardinality(t_ids)]);
    SELECT array_agg(o.only ORDER BY d.k) INTO v_only
      FROM unnest(v_ids) WITH ORDINALITY AS d(event_id, k)
      LEFT JOIN LATERAL (
            SELECT CASE WHEN count(*) = 1 THEN min(tt.id::text)::uuid END AS only
              FROM unnest(t_ids, t_event) AS tt(id, event_id)
             WHERE tt.event_id = d.event_id) o ON true;

    SELECT coalesce(array_agg(r.i ORDER BY r.i, g.g), '{}') INTO v_item_req
      FROM generate_subscripts(p_item_counts, 1) AS r(i),
           generate_series(1, p_item_counts[r.i]) AS g(g);

    SELECT array_agg(d.k ORDER BY r.n) INTO v_at
      FROM unnest(p_events) WITH ORDINALITY AS r(event_id, n)
      LEFT JOIN unnest(v_ids) WITH ORDINALITY AS d(event_id, k) ON d.event_id = r.event_id;

    IF v_capped THEN
        -- After the locks, with a snapshot newer than them (see the top); only the
        -- requests of capped events look their customer up.
        SELECT array_agg(r.pair ORDER BY r.n),
               array_agg(coalesce(b.held, 0) + coalesce(h.held, 0) ORDER BY r.n)
          INTO v_pair, v_held
          FROM (SELECT u.n, u.event_id, u.user_id, v_cap[v_at[u.n::integer]] AS cap,
                       min(u.n) OVER (PARTITION BY u.event_id, u.user_id)::integer AS pair
                  FROM unnest(p_events, p_users) WITH ORDINALITY AS u(event_id, user_id, n)) r
          LEFT JOIN LATERAL (
                SELECT sum(bk.quantity)::integer AS held FROM bookings bk
                 WHERE r.cap IS NOT NULL AND bk.event_id = r.event_id
                   AND bk.user_id = r.user_id AND bk.status = 'confirmed') b ON true
          LEFT JOIN LATERAL (
                SELECT sum(ho.quantity)::integer AS held FROM holds ho
                 WHERE r.cap IS NOT NULL AND ho.event_id = r.event_id
                   AND ho.user_id = r.user_id AND ho.status = 'held') h ON true;
    END IF;

    FOR i IN 1 .. v_count LOOP
        k := v_at[i];
        v_last := v_first + p_item_counts[i] - 1;
        v_firsts[i] := v_first;
        v_first := v_last + 1;

        IF p_keys[i] IS NOT NULL THEN
            SELECT f.id, f.request_fingerprint INTO v_found_id, v_found_fp
              FROM taken_by_key(p_holds[i], p_users[i], p_keys[i]) f;
            IF FOUND THEN
                v_outcomes[i] := CASE WHEN v_found_fp = p_fingerprints[i]
                                      THEN 'replayed' ELSE 'key_reused' END;
                v_records[i] := v_found_id;
                CONTINUE;
            END IF;
        END IF;

        IF k IS NULL THEN
            v_outcomes[i] := 'event_not_found';
            CONTINUE;
        ELSIF NOT v_open[k] THEN
            v_outcomes[i] := 'event_not_bookable';
            v_availables[i] := v_left[k];
            CONTINUE;
        END IF;

        -- Each item on its own: which type, on sale, within the type's maximum.
        v_total := 0;
        v_cents := 0;
        v_refused := false;
        FOR j IN v_firsts[i] .. v_last LOOP
            v_type := coalesce(p_item_types[j], v_only[k]);
            IF v_type IS NULL THEN
                v_outcomes[i] := 'ticket_type_required';
            ELSE
                t := array_position(t_ids, v_type);
                IF t IS NULL OR t_event[t] <> p_events[i] THEN
                    v_outcomes[i] := 'unknown_ticket_type';
                ELSIF NOT t_open[t] THEN
                    v_outcomes[i] := 'ticket_type_not_on_sale';
                ELSIF p_item_quantities[j] > t_max[t] THEN
                    v_outcomes[i] := 'too_many_tickets';
                    v_alloweds[i] := t_max[t];
                END IF;
            END IF;
            IF v_outcomes[i] IS NOT NULL THEN
                v_types[i] := v_type;
                v_refused := true;
                EXIT;
            END IF;
            v_item_at[j] := t;
            v_total := v_total + p_item_quantities[j];
            v_cents := v_cents + p_item_quantities[j]::bigint * t_price[t];
        END LOOP;
        CONTINUE WHEN v_refused;

        IF v_total > v_max[k] THEN
            v_outcomes[i] := 'too_many_tickets';
            v_alloweds[i] := v_max[k];
            CONTINUE;
        END IF;
        FOR j IN v_firsts[i] .. v_last LOOP
            t := v_item_at[j];
            IF p_item_quantities[j] > t_left[t] THEN
                v_outcomes[i] := 'sold_out';
                v_types[i] := t_ids[t];
                v_availables[i] := least(t_left[t], v_left[k]);
                v_refused := true;
                EXIT;
            END IF;
        END LOOP;
        CONTINUE WHEN v_refused;
        IF v_total > v_left[k] THEN
            v_outcomes[i] := 'sold_out';
            v_availables[i] := v_left[k];
            CONTINUE;
        ELSIF v_cap[k] IS NOT NULL AND v_held[v_pair[i]] + v_total > v_cap[k] THEN
            v_outcomes[i] := 'customer_limit_reached';
            v_alloweds[i] := greatest(v_cap[k] - v_held[v_pair[i]], 0);
            CONTINUE;
        END IF;

        IF p_keys[i] IS NULL THEN
            v_id := gen_random_uuid();
            v_later[i] := true;
        ELSIF p_holds[i] THEN
            -- Inserted now, so a later request in this batch with the same key finds it,
            -- and ON CONFLICT meets a twin committed by a concurrent call.
            INSERT INTO holds (event_id, user_id, quantity, total_cents, currency, expires_at,
                               idempotency_key, request_fingerprint)
            VALUES (p_events[i], p_users[i], v_total, v_cents, v_currency[k],
                    v_expires, p_keys[i],
                    p_fingerprints[i])
            ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING holds.id INTO v_id;
        ELSE
            INSERT INTO bookings (event_id, user_id, quantity, total_cents, currency,
                                  idempotency_key, request_fingerprint)
            VALUES (p_events[i], p_users[i], v_total, v_cents, v_currency[k], p_keys[i],
                    p_fingerprints[i])
            ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING bookings.id INTO v_id;
        END IF;
        IF v_id IS NULL THEN
            -- A twin committed meanwhile by a concurrent call: answered like a replay.
            SELECT f.id, f.request_fingerprint INTO v_found_id, v_found_fp
              FROM taken_by_key(p_holds[i], p_users[i], p_keys[i]) f;
            v_outcomes[i] := CASE WHEN v_found_fp = p_fingerprints[i]
                                  THEN 'replayed' ELSE 'key_reused' END;
            v_records[i] := v_found_id;
            CONTINUE;
        END IF;

        v_left[k] := v_left[k] - v_total;
        FOR j IN v_firsts[i] .. v_last LOOP
            t := v_item_at[j];
            t_left[t] := t_left[t] - p_item_quantities[j];
            t_added[t] := t_added[t] + p_item_quantities[j];
        END LOOP;
        -- The items as booking_items_of shows them: in the order the types were added.
        IF v_last = v_firsts[i] THEN
            t := v_item_at[v_last];
            v_json := jsonb_build_array(jsonb_build_object(
                'ticket_type_id', t_ids[t], 'name', t_name[t],
                'quantity', p_item_quantities[v_last], 'price_cents', t_price[t]));
        ELSE
            SELECT jsonb_agg(jsonb_build_object(
                       'ticket_type_id', t_ids[v_item_at[j]], 'name', t_name[v_item_at[j]],
                       'quantity', p_item_quantities[j], 'price_cents', t_price[v_item_at[j]])
                       ORDER BY t_created[v_item_at[j]], t_ids[v_item_at[j]])
              INTO v_json
              FROM generate_series(v_firsts[i], v_last) AS j;
        END IF;
        v_items_of[i] := v_json;
        IF v_cap[k] IS NOT NULL THEN
            v_held[v_pair[i]] := v_held[v_pair[i]] + v_total;
        END IF;
        v_outcomes[i] := 'created';
        v_availables[i] := v_left[k];
        v_records[i] := v_id;
        v_booked := v_booked OR NOT p_holds[i];
        v_totals[i] := v_total;
        v_amounts[i] := v_cents;
        v_id := NULL;
    END LOOP;

    -- The constraints events_tickets_in_range and ticket_types_within_quota would refuse
    -- a count gone too far here.
    UPDATE events e SET available_tickets = c.left_now
      FROM unnest(v_ids, v_left, v_before) AS c(id, left_now, left_before)
     WHERE e.id = c.id AND c.left_now <> c.left_before;
    UPDATE ticket_types tt SET taken = tt.taken + c.added
      FROM unnest(t_ids, t_added) AS c(id, added)
     WHERE tt.id = c.id AND c.added <> 0;

    INSERT INTO bookings (id, event_id, user_id, quantity, total_cents, currency,
                          request_fingerprint)
    SELECT v_records[i], p_events[i], p_users[i], v_totals[i], v_amounts[i],
           v_currency[v_at[i]], p_fingerprints[i]
      FROM generate_subscripts(p_events, 1) AS i
     WHERE v_later[i] AND NOT p_holds[i];
    IF v_holding THEN
        INSERT INTO holds (id, event_id, user_id, quantity, total_cents, currency, expires_at,
                           request_fingerprint)
        SELECT v_records[i], p_events[i], p_users[i], v_totals[i], v_amounts[i],
               v_currency[v_at[i]], v_expires, p_fingerprints[i]
          FROM generate_subscripts(p_events, 1) AS i
         WHERE v_later[i] AND p_holds[i];
        INSERT INTO hold_items (hold_id, ticket_type_id, quantity, price_cents)
        SELECT v_records[v_item_req[j]], t_ids[v_item_at[j]], p_item_quantities[j],
               t_price[v_item_at[j]]
          FROM generate_subscripts(p_item_types, 1) AS j
         WHERE v_totals[v_item_req[j]] IS NOT NULL AND p_holds[v_item_req[j]];
    END IF;
    INSERT INTO booking_items (booking_id, ticket_type_id, quantity, price_cents)
    SELECT v_records[v_item_req[j]], t_ids[v_item_at[j]], p_item_quantities[j],
           t_price[v_item_at[j]]
      FROM generate_subscripts(p_item_types, 1) AS j
     WHERE v_totals[v_item_req[j]] IS NOT NULL AND NOT p_holds[v_item_req[j]];
    -- One statement, so the outbox trigger's NOTIFY fires once for the batch; none when
    -- no booking was made (holds alone): NOTIFYing transactions commit one at a time
    -- across the cluster (a lock held until the commit's WAL is flushed). Each booking
    -- gets its confirmation row, and a webhooks row when its organizer has an endpoint
    -- that wants it (asked once per event of the call, not per booking).
    IF v_booked THEN
        v_hooked := ARRAY(SELECT e FROM unnest(v_ids) AS e
                           WHERE webhook_wanted(e, 'booking.created'));
        INSERT INTO outbox (topic, kind, payload, request_id)
        SELECT m.topic, m.kind, jsonb_build_object('booking_id', v_records[i]), p_request_ids[i]
          FROM generate_subscripts(p_events, 1) AS i
         CROSS JOIN (VALUES (1, 'confirmations', 'booking_confirmed'),
                            (2, 'webhooks', 'booking.created')) AS m (n, topic, kind)
         WHERE v_totals[i] IS NOT NULL AND NOT p_holds[i]
           AND (m.n = 1 OR p_events[i] = ANY (v_hooked))
         ORDER BY i, m.n;
    END IF;

    -- What this call made is answered from what it knows (the defaults of a new row:
    -- created_at is now(), the transaction's time); only what a key found is read back.
    RETURN QUERY
    SELECT v_outcomes[i], v_availables[i], v_alloweds[i], v_types[i],
           coalesce(v_made.id, bk.id, ho.id), coalesce(v_made.event_id, bk.event_id, ho.event_id),
           coalesce(v_made.user_id, bk.user_id, ho.user_id),
           coalesce(v_made.quantity, bk.quantity, ho.quantity),
           coalesce(v_made.status, bk.status, ho.status),
           coalesce(v_made.total_cents, bk.total_cents, ho.total_cents),
           coalesce(v_made.currency, bk.currency, ho.currency),
           CASE WHEN v_made.id IS NOT NULL THEN v_made.items
                WHEN bk.id IS NOT NULL THEN booking_items_of(bk.id)
                WHEN ho.id IS NOT NULL THEN hold_items_of(ho.id) END,
           coalesce(v_made.created_at, bk.created_at, ho.created_at),
           coalesce(v_made.confirmation_status, bk.confirmation_status),
           bk.confirmed_at, bk.payment_reference, bk.hold_id,
           coalesce(v_made.expires_at, ho.expires_at), ho.booking_id
      FROM generate_subscripts(p_events, 1) AS i
      LEFT JOIN LATERAL (
            SELECT v_records[i] AS id, p_events[i] AS event_id, p_users[i] AS user_id,
                   v_totals[i] AS quantity,
                   CASE WHEN p_holds[i] THEN 'held' ELSE 'confirmed' END AS status,
                   v_amounts[i] AS total_cents, v_currency[v_at[i]] AS currency,
                   v_items_of[i] AS items, now() AS created_at,
                   CASE WHEN NOT p_holds[i] THEN 'pending' END AS confirmation_status,
                   CASE WHEN p_holds[i] THEN v_expires END AS expires_at
             WHERE v_totals[i] IS NOT NULL) v_made ON true
      -- One index probe for each row a key found; LIMIT keeps the planner from pulling
      -- the lookups up into a join over the whole table.
      LEFT JOIN LATERAL (
            SELECT * FROM bookings b
             WHERE v_totals[i] IS NULL AND NOT p_holds[i] AND b.id = v_records[i]
             LIMIT 1) bk ON true
      LEFT JOIN LATERAL (
            SELECT * FROM holds h
             WHERE v_totals[i] IS NULL AND p_holds[i] AND h.id = v_records[i]
             LIMIT 1) ho ON true
     ORDER BY i;
END $$;
