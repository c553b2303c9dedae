-- Ticket types, the items of a booking, and checkout holds.
--
-- An event's tickets are sold as one or more ticket types, each with its price and an
-- optional quota of its own; the event's capacity stays the overall quota. A hold takes
-- tickets for a few minutes while the buyer pays; it is confirmed into a booking,
-- released, or expires. Counting rule: ticket_types.taken and the event's
-- capacity - available_tickets are tickets sold plus tickets held, and both change only
-- with the event's row locked, so one lock orders every change to an event's tickets.

-- One currency per event (ISO 4217); every price of the event is in it.
ALTER TABLE events ADD COLUMN currency text NOT NULL DEFAULT 'EUR'
    CONSTRAINT events_currency_iso CHECK (currency ~ '^[A-Z]{3}$');

CREATE TABLE ticket_types (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    event_id        uuid NOT NULL REFERENCES events (id),
    name            text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    price_cents     integer NOT NULL CHECK (price_cents BETWEEN 0 AND 100000000),
    -- The type's own quota (NULL: only the event's capacity bounds it).
    quota           integer CHECK (quota BETWEEN 1 AND 1000000),
    -- Tickets of this type sold plus held.
    taken           integer NOT NULL DEFAULT 0 CHECK (taken >= 0),
    sales_start     timestamptz,
    sales_end       timestamptz,
    max_per_booking integer CHECK (max_per_booking BETWEEN 1 AND 100),
    status          text NOT NULL DEFAULT 'on_sale' CHECK (status IN ('on_sale', 'closed')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ticket_types_within_quota CHECK (taken <= quota),
    CONSTRAINT ticket_types_window CHECK (sales_end > sales_start),
    CONSTRAINT ticket_types_name_once UNIQUE (event_id, name)
);
CREATE INDEX ticket_types_by_event ON ticket_types (event_id, created_at, id);

-- What a booking bought, at the price of the moment it was taken.
ALTER TABLE bookings
    ADD COLUMN total_cents bigint NOT NULL DEFAULT 0 CHECK (total_cents >= 0),
    ADD COLUMN currency text NOT NULL DEFAULT 'EUR' CHECK (currency ~ '^[A-Z]{3}$'),
    ADD COLUMN payment_reference text CHECK (char_length(payment_reference) BETWEEN 1 AND 255),
    ADD COLUMN hold_id uuid;

CREATE TABLE booking_items (
    booking_id     uuid NOT NULL REFERENCES bookings (id),
    ticket_type_id uuid NOT NULL REFERENCES ticket_types (id),
    quantity       integer NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    price_cents    integer NOT NULL CHECK (price_cents >= 0),
    PRIMARY KEY (booking_id, ticket_type_id)
);
-- Whether a type has sales (it may then be closed, not deleted).
CREATE INDEX booking_items_by_type ON booking_items (ticket_type_id);

CREATE TABLE holds (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    event_id            uuid NOT NULL REFERENCES events (id),
    user_id             uuid NOT NULL REFERENCES users (id),
    quantity            integer NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    total_cents         bigint NOT NULL CHECK (total_cents >= 0),
    currency            text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status              text NOT NULL DEFAULT 'held'
                        CHECK (status IN ('held', 'confirmed', 'released', 'expired')),
    expires_at          timestamptz NOT NULL,
    -- When it stopped holding tickets: confirmed, released or expired.
    ended_at            timestamptz,
    booking_id          uuid REFERENCES bookings (id),
    idempotency_key     text CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
    request_fingerprint text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT holds_ended_consistent CHECK ((status = 'held') = (ended_at IS NULL)),
    CONSTRAINT holds_booked_when_confirmed CHECK ((status = 'confirmed') = (booking_id IS NOT NULL))
);
ALTER TABLE bookings ADD CONSTRAINT bookings_hold FOREIGN KEY (hold_id) REFERENCES holds (id);
CREATE UNIQUE INDEX bookings_one_per_hold ON bookings (hold_id) WHERE hold_id IS NOT NULL;
CREATE UNIQUE INDEX holds_idempotency_key ON holds (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The holds still taking tickets, by when they run out: what the holds actor claims.
CREATE INDEX holds_due ON holds (expires_at) WHERE status = 'held';
-- A customer's live holds of an event (the per-customer cap counts them), and an
-- event's live holds (cancelling the event releases them).
CREATE INDEX holds_live ON holds (event_id, user_id) WHERE status = 'held';

CREATE TABLE hold_items (
    hold_id        uuid NOT NULL REFERENCES holds (id),
    ticket_type_id uuid NOT NULL REFERENCES ticket_types (id),
    quantity       integer NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    price_cents    integer NOT NULL CHECK (price_cents >= 0),
    PRIMARY KEY (hold_id, ticket_type_id)
);
CREATE INDEX hold_items_by_type ON hold_items (ticket_type_id);

-- Every event so far sold one kind of free ticket: it becomes the event's default type,
-- and every booking an item of it.
INSERT INTO ticket_types (event_id, name, price_cents, taken, created_at)
SELECT e.id, 'General admission', 0,
       CASE WHEN e.status = 'cancelled' THEN 0 ELSE e.capacity - e.available_tickets END,
       e.created_at
  FROM events e;
INSERT INTO booking_items (booking_id, ticket_type_id, quantity, price_cents)
SELECT b.id, t.id, b.quantity, 0
  FROM bookings b JOIN ticket_types t ON t.event_id = b.event_id;
