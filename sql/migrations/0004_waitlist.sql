-- The waiting list: customers who found a ticket type sold out wait in order, and
-- tickets that come back are offered to them, as holds in their name, before the public
-- can buy them again.
--
-- Counting rule (see 0003) grows one term: a type's taken and its event's
-- capacity - available_tickets are tickets sold, held, and reserved. Reserved tickets
-- came back while the type had someone waiting but are too few for the first in line;
-- they stay off sale until enough come back for an offer, or nobody waits any more.

ALTER TABLE ticket_types
    ADD COLUMN reserved integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    -- Its entries waiting (kept with the list, under the event's row lock).
    ADD COLUMN waiting integer NOT NULL DEFAULT 0 CHECK (waiting >= 0),
    -- Whether an entry that fits what came back may be offered before an earlier one
    -- that wants more.
    ADD COLUMN waitlist_allow_skip boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT ticket_types_reserved_within_taken CHECK (reserved <= taken);

-- The few types keeping something reserved: what the holds actor looks at each pass.
CREATE INDEX ticket_types_reserving ON ticket_types (event_id) WHERE reserved > 0;

CREATE TABLE waitlist_entries (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- The order of joining: offers go by it.
    seq            bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    event_id       uuid NOT NULL REFERENCES events (id),
    ticket_type_id uuid NOT NULL REFERENCES ticket_types (id),
    user_id        uuid NOT NULL REFERENCES users (id),
    quantity       integer NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    -- waiting; offered (hold_id holds its tickets); then accepted (the hold was
    -- confirmed), expired or declined (the offer ran out or was let go), left (the
    -- customer left the list while waiting), lapsed (its turn came when the customer
    -- already had as many tickets as the event allows one customer), or cancelled (with
    -- the event).
    status         text NOT NULL DEFAULT 'waiting' CHECK (status IN
                   ('waiting', 'offered', 'accepted', 'expired', 'declined', 'left',
                    'lapsed', 'cancelled')),
    hold_id        uuid UNIQUE REFERENCES holds (id),
    created_at     timestamptz NOT NULL DEFAULT now(),
    offered_at     timestamptz,
    ended_at       timestamptz,
    CONSTRAINT waitlist_offer_has_hold CHECK (
        (hold_id IS NOT NULL) = (offered_at IS NOT NULL)
        AND (status NOT IN ('offered', 'accepted', 'expired', 'declined') OR hold_id IS NOT NULL)
        AND (status NOT IN ('waiting', 'left', 'lapsed') OR hold_id IS NULL)
    ),
    CONSTRAINT waitlist_ended_consistent CHECK (
        (status IN ('waiting', 'offered')) = (ended_at IS NULL)
    )
);
-- One live entry per customer and type; after an offer ends they may join again.
CREATE UNIQUE INDEX waitlist_once_per_customer ON waitlist_entries (ticket_type_id, user_id)
    WHERE status IN ('waiting', 'offered');
-- The queue of a type, in order: what the offers read.
CREATE INDEX waitlist_queue ON waitlist_entries (ticket_type_id, seq) WHERE status = 'waiting';
-- Whether an event has anyone waiting, asked each time its tickets come back.
CREATE INDEX waitlist_waiting_by_event ON waitlist_entries (event_id) WHERE status = 'waiting';
CREATE INDEX waitlist_by_event ON waitlist_entries (event_id, seq);
CREATE INDEX waitlist_by_user ON waitlist_entries (user_id, created_at DESC, id DESC);
-- The entries and offers by status for /metrics, counted from the index alone.
CREATE INDEX waitlist_by_status ON waitlist_entries (status, offered_at);

-- The offer mail is one per hold.
ALTER TABLE notifications ADD COLUMN hold_id uuid REFERENCES holds (id);
ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_kind_check CHECK (kind IN
    ('booking_confirmed', 'booking_cancelled', 'event_updated', 'event_cancelled',
     'waitlist_offer'));
ALTER TABLE notifications DROP CONSTRAINT notifications_keyed;
ALTER TABLE notifications DROP CONSTRAINT notifications_key_matches_kind;
ALTER TABLE notifications ADD CONSTRAINT notifications_key_matches_kind CHECK (
    CASE WHEN kind IN ('booking_confirmed', 'booking_cancelled')
         THEN booking_id IS NOT NULL AND hold_id IS NULL
         WHEN kind = 'waitlist_offer'
         THEN hold_id IS NOT NULL AND booking_id IS NULL AND event_version IS NULL
         ELSE booking_id IS NULL AND hold_id IS NULL AND event_version IS NOT NULL
    END
);
CREATE UNIQUE INDEX notifications_hold_once ON notifications (hold_id, kind)
    WHERE hold_id IS NOT NULL;
