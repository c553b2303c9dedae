-- The last invariants the code relied on without the schema saying so (issue 9).
--
-- A mail's unique key follows from its kind: a booking mail is one per booking and kind
-- (notifications_booking_once), an event mail one per event, version, attendee and kind
-- (notifications_event_once, which covers only rows without a booking). A booking mail
-- recorded without its booking, or an event mail with a booking or without its version
-- (NULLs never collide in a unique index), would escape its index and could be recorded
-- twice.
ALTER TABLE notifications ADD CONSTRAINT notifications_key_matches_kind CHECK (
    CASE WHEN kind IN ('booking_confirmed', 'booking_cancelled')
         THEN booking_id IS NOT NULL
         ELSE booking_id IS NULL AND event_version IS NOT NULL
    END
);

-- confirmed_at is when the confirmation mail was sent (the HTTP contract): it is set
-- exactly when the confirmation is 'sent'.
ALTER TABLE bookings ADD CONSTRAINT bookings_confirmed_when_sent CHECK (
    (confirmation_status = 'sent') = (confirmed_at IS NOT NULL)
);
