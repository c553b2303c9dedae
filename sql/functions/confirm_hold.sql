-- Turns a live hold into a booking: the tickets it took become sold, the price frozen
-- when it was taken becomes the booking's, and the confirmation mail is queued like any
-- booking's. No count changes (held and sold both count as taken), so the event's row
-- is locked only FOR KEY SHARE: confirmations run beside the event's booking calls, and
-- only an organizer's change or cancel of the event (FOR UPDATE) waits for them or
-- makes them wait.
--
-- Against the holds actor's expiry the hold's row decides: whichever locks it first
-- wins, and the other finds it no longer held. A hold whose expires_at has passed is
-- not confirmed even if the actor has not run yet.
--
-- Outcomes: confirmed; replayed (already confirmed, with the same payment reference or
-- none given: the same booking again); hold_already_confirmed (with another payment
-- reference); hold_not_found (none, or another customer's); hold_expired;
-- hold_released; event_not_bookable (the event started meanwhile: the hold runs out).

CREATE OR REPLACE FUNCTION confirm_hold(
    p_hold uuid, p_user uuid, p_payment_reference text, p_request_id text
) RETURNS TABLE (outcome text, booking bookings, items jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_hold    holds;
    v_event   events;
    v_booking uuid;
    v_reference text;
BEGIN
    SELECT * INTO v_hold FROM holds h WHERE h.id = p_hold AND h.user_id = p_user;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'hold_not_found', NULL::bookings, NULL::jsonb;
        RETURN;
    END IF;
    -- Event first, as everywhere, then the hold.
    SELECT * INTO v_event FROM events e WHERE e.id = v_hold.event_id FOR KEY SHARE;
    SELECT * INTO v_hold FROM holds h WHERE h.id = p_hold FOR UPDATE;

    IF v_hold.status = 'confirmed' THEN
        SELECT b.payment_reference INTO v_reference FROM bookings b WHERE b.id = v_hold.booking_id;
        RETURN QUERY SELECT CASE WHEN p_payment_reference IS NULL
                                      OR p_payment_reference IS NOT DISTINCT FROM v_reference
                                 THEN 'replayed' ELSE 'hold_already_confirmed' END,
                            b, booking_items_of(b.id)
                       FROM bookings b WHERE b.id = v_hold.booking_id;
        RETURN;
    ELSIF v_hold.status = 'released' THEN
        RETURN QUERY SELECT 'hold_released', NULL::bookings, NULL::jsonb;
        RETURN;
    ELSIF v_hold.status = 'expired' OR v_hold.expires_at <= now() THEN
        RETURN QUERY SELECT 'hold_expired', NULL::bookings, NULL::jsonb;
        RETURN;
    ELSIF v_event.status <> 'scheduled' OR v_event.starts_at <= now() THEN
        RETURN QUERY SELECT 'event_not_bookable', NULL::bookings, NULL::jsonb;
        RETURN;
    END IF;

    INSERT INTO bookings (event_id, user_id, quantity, total_cents, currency,
                          payment_reference, hold_id)
    VALUES (v_hold.event_id, v_hold.user_id, v_hold.quantity, v_hold.total_cents,
            v_hold.currency, p_payment_reference, v_hold.id)
    RETURNING bookings.id INTO v_booking;
    INSERT INTO booking_items (booking_id, ticket_type_id, quantity, price_cents)
    SELECT v_booking, i.ticket_type_id, i.quantity, i.price_cents
      FROM hold_items i WHERE i.hold_id = v_hold.id;
    UPDATE holds h SET status = 'confirmed', ended_at = now(), booking_id = v_booking
     WHERE h.id = v_hold.id;
    -- A waiting-list offer taken up.
    UPDATE waitlist_entries w SET status = 'accepted', ended_at = now()
     WHERE w.hold_id = v_hold.id AND w.status = 'offered';
    INSERT INTO outbox (topic, kind, payload, request_id)
    SELECT m.topic, m.kind, jsonb_build_object('booking_id', v_booking), p_request_id
      FROM (VALUES (1, 'confirmations', 'booking_confirmed'),
                   (2, 'webhooks', 'booking.created')) AS m (n, topic, kind)
     WHERE CASE WHEN m.n = 1 THEN true ELSE webhook_wanted(v_hold.event_id, 'booking.created') END
     ORDER BY m.n;

    RETURN QUERY SELECT 'confirmed', b, booking_items_of(b.id) FROM bookings b WHERE b.id = v_booking;
END $$;
