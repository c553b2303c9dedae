-- Puts p_event's reserved tickets back among its available ones and returns how many,
-- so that a change of the event's counts is checked against tickets sold and held
-- alone; offer_waitlist reserves again what the waiting need. The caller holds the
-- event's row locked (FOR NO KEY UPDATE or stronger) and calls offer_waitlist before it
-- commits.

CREATE OR REPLACE FUNCTION waitlist_unreserve(p_event uuid) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_back integer;
BEGIN
    WITH back AS (
        UPDATE ticket_types t SET taken = t.taken - o.reserved, reserved = 0
          FROM (SELECT r.id, r.reserved FROM ticket_types r
                 WHERE r.event_id = p_event AND r.reserved > 0) o
         WHERE t.id = o.id
        RETURNING o.reserved
    )
    SELECT coalesce(sum(b.reserved), 0)::integer INTO v_back FROM back b;
    IF v_back > 0 THEN
        UPDATE events e SET available_tickets = e.available_tickets + v_back
         WHERE e.id = p_event;
    END IF;
    RETURN v_back;
END $$;
