-- Users, events, bookings, the outbox and the mails sent. Their stored procedures and
-- triggers are in sql/functions/.
-- Every invariant the code relies on is a constraint here, so a bug in Python cannot
-- oversell or record a mail twice.

CREATE TABLE users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
    name          text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    role          text NOT NULL CHECK (role IN ('organizer', 'customer')),
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- The form in which two addresses are the same account, computed in Python in one
    -- place (eventbook/emails.py): the local part in NFKC and case-folded, the domain as
    -- its IDNA A-label. The address as typed stays in email, for mail and display.
    email_key     text CONSTRAINT users_email_key_present CHECK (email_key IS NOT NULL)
);
CREATE UNIQUE INDEX users_email_key ON users (email_key);

CREATE TABLE events (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organizer_id            uuid NOT NULL REFERENCES users (id),
    title                   text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    description             text NOT NULL DEFAULT '' CHECK (char_length(description) <= 10000),
    venue                   text CHECK (char_length(venue) <= 200),
    starts_at               timestamptz NOT NULL,
    ends_at                 timestamptz,
    capacity                integer NOT NULL CHECK (capacity BETWEEN 1 AND 1000000),
    available_tickets       integer NOT NULL,
    max_tickets_per_booking integer NOT NULL DEFAULT 10
                            CHECK (max_tickets_per_booking BETWEEN 1 AND 100),
    status                  text NOT NULL DEFAULT 'scheduled'
                            CHECK (status IN ('scheduled', 'cancelled')),
    version                 integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    -- The tickets one customer may hold in confirmed bookings of the event (NULL: no cap).
    max_tickets_per_customer integer
                            CONSTRAINT events_customer_cap_in_range
                            CHECK (max_tickets_per_customer BETWEEN 1 AND 1000000),
    CONSTRAINT events_tickets_in_range CHECK (available_tickets BETWEEN 0 AND capacity),
    CONSTRAINT events_ends_after_start CHECK (ends_at IS NULL OR ends_at > starts_at),
    -- A booking the per-booking maximum allows must fit under the cap, or the event
    -- would advertise bookings it always refuses.
    CONSTRAINT events_customer_cap_fits_a_booking
        CHECK (max_tickets_per_customer >= max_tickets_per_booking)
) WITH (fillfactor = 70);  -- room for HOT updates of the ticket count on a hot event

-- Browse: scheduled events, soonest first, keyset on (starts_at, id).
CREATE INDEX events_browse ON events (starts_at, id) WHERE status = 'scheduled';
CREATE INDEX events_by_organizer ON events (organizer_id, starts_at, id);
-- Word-prefix search on title and description. An expression index (not a stored
-- generated column) so that a booking's UPDATE does not recompute it.
CREATE INDEX events_search ON events
    USING gin (to_tsvector('simple', title || ' ' || description));

CREATE TABLE bookings (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    event_id            uuid NOT NULL REFERENCES events (id),
    user_id             uuid NOT NULL REFERENCES users (id),
    quantity            integer NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    status              text NOT NULL DEFAULT 'confirmed'
                        CHECK (status IN ('confirmed', 'cancelled')),
    cancel_reason       text CHECK (cancel_reason IN ('customer', 'event_cancelled')),
    confirmation_status text NOT NULL DEFAULT 'pending'
                        CHECK (confirmation_status IN ('pending', 'sent', 'failed')),
    confirmed_at        timestamptz,
    cancelled_at        timestamptz,
    idempotency_key     text CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
    request_fingerprint text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT bookings_cancelled_consistent
        CHECK ((status = 'cancelled') = (cancelled_at IS NOT NULL AND cancel_reason IS NOT NULL)),
    -- confirmed_at is when the confirmation mail was sent (the HTTP contract): it is set
    -- exactly when the confirmation is 'sent'.
    CONSTRAINT bookings_confirmed_when_sent
        CHECK ((confirmation_status = 'sent') = (confirmed_at IS NOT NULL))
);
-- One booking per customer and Idempotency-Key, kept as long as the booking.
CREATE UNIQUE INDEX bookings_idempotency_key ON bookings (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX bookings_by_user ON bookings (user_id, created_at DESC, id DESC);
CREATE INDEX bookings_by_event ON bookings (event_id, created_at, id);
-- Fan-out pages over attendees by user.
CREATE INDEX bookings_attendees ON bookings (event_id, user_id);
-- The bookings still waiting for their confirmation mail, oldest first: what the
-- reconciler and `eventbook check` look for on every pass. Partial, so it holds only the
-- few bookings in flight, not every booking ever made.
CREATE INDEX bookings_pending_confirmation ON bookings (created_at, id)
    WHERE confirmation_status = 'pending';

-- Transactional outbox: work for the actors, written in the same transaction as the
-- change that causes it, moved to Redis Streams by the relay, deleted once Redis has it.
CREATE TABLE outbox (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic      text NOT NULL,
    kind       text NOT NULL,
    payload    jsonb NOT NULL,
    request_id text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Every mail, recorded before it is sent (sent_at NULL) and stamped after.
CREATE TABLE notifications (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id       uuid NOT NULL REFERENCES users (id),
    kind          text NOT NULL CHECK (kind IN
                  ('booking_confirmed', 'booking_cancelled', 'event_updated', 'event_cancelled')),
    event_id      uuid NOT NULL REFERENCES events (id),
    booking_id    uuid REFERENCES bookings (id),
    event_version integer,
    recipient     text NOT NULL,
    subject       text NOT NULL,
    body          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    sent_at       timestamptz,
    -- A mail given up on after its retries: recorded, so it is counted and not resent.
    failed_at     timestamptz,
    CONSTRAINT notifications_keyed CHECK (booking_id IS NOT NULL OR event_version IS NOT NULL),
    -- A mail's unique key follows from its kind: a booking mail is one per booking and
    -- kind (notifications_booking_once), an event mail one per event, version, attendee
    -- and kind (notifications_event_once, which covers only rows without a booking). A
    -- booking mail recorded without its booking, or an event mail with a booking or
    -- without its version (NULLs never collide in a unique index), would escape its
    -- index and could be recorded twice.
    CONSTRAINT notifications_key_matches_kind CHECK (
        CASE WHEN kind IN ('booking_confirmed', 'booking_cancelled')
             THEN booking_id IS NOT NULL
             ELSE booking_id IS NULL AND event_version IS NOT NULL
        END
    )
);
-- One mail per booking and kind; one per attendee and event change.
CREATE UNIQUE INDEX notifications_booking_once ON notifications (booking_id, kind)
    WHERE booking_id IS NOT NULL;
CREATE UNIQUE INDEX notifications_event_once ON notifications
    (event_id, event_version, user_id, kind) WHERE booking_id IS NULL;
CREATE INDEX notifications_by_user ON notifications (user_id, created_at DESC, id DESC);
