-- A customer leaves the waiting list. A waiting entry is left; an offered one is
-- declined: its hold is released and goes to the next in line. Either way the queue
-- moves on at once (the next entry may fit what is reserved; nobody left waiting puts
-- the reserve back on sale). Under the event's row lock, like every change of the list.
--
-- Outcomes: left, declined; ended (the entry was over already: accepted, expired,
-- declined, left or cancelled, and stays so); entry_not_found (none, or another
-- customer's); offer_accepted (the offer was confirmed into a booking: cancel that).

CREATE OR REPLACE FUNCTION leave_waitlist(p_entry uuid, p_user uuid)
RETURNS TABLE (outcome text)
LANGUAGE plpgsql AS $$
DECLARE
    v_entry waitlist_entries;
BEGIN
    SELECT * INTO v_entry FROM waitlist_entries w WHERE w.id = p_entry AND w.user_id = p_user;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'entry_not_found';
        RETURN;
    END IF;
    PERFORM FROM events e WHERE e.id = v_entry.event_id FOR NO KEY UPDATE;
    SELECT * INTO v_entry FROM waitlist_entries w WHERE w.id = p_entry;
    IF v_entry.status = 'waiting' THEN
        UPDATE waitlist_entries w SET status = 'left', ended_at = now() WHERE w.id = p_entry;
        UPDATE ticket_types t SET waiting = t.waiting - 1 WHERE t.id = v_entry.ticket_type_id;
        PERFORM offer_waitlist(v_entry.event_id);
        RETURN QUERY SELECT 'left';
    ELSIF v_entry.status = 'offered' THEN
        -- The hold's row decides against its confirmation, as for any release.
        PERFORM FROM holds h WHERE h.id = v_entry.hold_id FOR UPDATE;
        IF EXISTS (SELECT FROM release_holds(ARRAY[v_entry.hold_id], 'released')) THEN
            RETURN QUERY SELECT 'declined';
        ELSE
            SELECT * INTO v_entry FROM waitlist_entries w WHERE w.id = p_entry;
            RETURN QUERY SELECT CASE WHEN v_entry.status = 'accepted' THEN 'offer_accepted'
                                     ELSE 'ended' END;
        END IF;
    ELSIF v_entry.status = 'accepted' THEN
        RETURN QUERY SELECT 'offer_accepted';
    ELSE
        RETURN QUERY SELECT 'ended';
    END IF;
END $$;
