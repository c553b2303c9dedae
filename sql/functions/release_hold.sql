-- The customer lets a live hold go: its tickets are bookable again at once.
-- Outcomes: released; hold_not_found (none, or another customer's); and, for a hold no
-- longer live, hold_confirmed, hold_expired (its time ran out, whether or not the holds
-- actor has got to it), or hold_released.

CREATE OR REPLACE FUNCTION release_hold(p_hold uuid, p_user uuid)
RETURNS TABLE (outcome text)
LANGUAGE plpgsql AS $$
DECLARE
    v_hold holds;
BEGIN
    SELECT * INTO v_hold FROM holds h WHERE h.id = p_hold AND h.user_id = p_user;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'hold_not_found';
        RETURN;
    END IF;
    -- Event first, as everywhere: the counts change under its lock.
    PERFORM FROM events e WHERE e.id = v_hold.event_id FOR NO KEY UPDATE;
    SELECT * INTO v_hold FROM holds h WHERE h.id = p_hold FOR UPDATE;
    IF v_hold.status = 'held' AND v_hold.expires_at <= now() THEN
        RETURN QUERY SELECT 'hold_expired';
    ELSIF v_hold.status = 'held' THEN
        PERFORM release_holds(ARRAY[p_hold], 'released');
        RETURN QUERY SELECT 'released';
    ELSE
        RETURN QUERY SELECT CASE v_hold.status WHEN 'confirmed' THEN 'hold_confirmed'
                                               WHEN 'expired' THEN 'hold_expired'
                                               ELSE 'hold_released' END;
    END IF;
END $$;
