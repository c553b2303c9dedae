-- Ends live holds and gives their tickets back to their types and events, as
-- p_status ('released': by the customer or with the event; 'expired': by the holds
-- actor, which passes only holds whose expires_at has passed). The caller holds the
-- events' rows locked (FOR NO KEY UPDATE or stronger), which every change of a count
-- takes first; holds no longer live are left as they are, so a hold ends once.
-- A hold that was a waiting-list offer ends its entry too (expired, or declined), and
-- the tickets that came back are offered to the next in line (offer_waitlist) before
-- anyone else can book them. Returns the holds ended.

CREATE OR REPLACE FUNCTION release_holds(p_holds uuid[], p_status text)
RETURNS SETOF uuid
LANGUAGE plpgsql AS $$
DECLARE
    v_ended uuid[];
BEGIN
    WITH ended AS (
        UPDATE holds h SET status = p_status, ended_at = now()
         WHERE h.id = ANY (p_holds) AND h.status = 'held'
        RETURNING h.id, h.event_id, h.quantity
    ), events_back AS (
        UPDATE events e SET available_tickets = e.available_tickets + b.quantity
          FROM (SELECT x.event_id, sum(x.quantity)::integer AS quantity
                  FROM ended x GROUP BY x.event_id) b
         WHERE e.id = b.event_id
    )
    SELECT coalesce(array_agg(x.id), '{}') INTO v_ended FROM ended x;

    UPDATE ticket_types t SET taken = t.taken - b.quantity
      FROM (SELECT i.ticket_type_id, sum(i.quantity)::integer AS quantity
              FROM hold_items i WHERE i.hold_id = ANY (v_ended)
             GROUP BY i.ticket_type_id) b
     WHERE t.id = b.ticket_type_id;

    IF v_ended <> '{}' THEN
        IF p_status = 'expired' THEN
            INSERT INTO outbox (topic, kind, payload)
            SELECT 'webhooks', 'hold.expired', jsonb_build_object('hold_id', h.id)
              FROM holds h
             WHERE h.id = ANY (v_ended) AND webhook_wanted(h.event_id, 'hold.expired')
             ORDER BY h.id;
        END IF;
        UPDATE waitlist_entries w
           SET status = CASE WHEN p_status = 'expired' THEN 'expired' ELSE 'declined' END,
               ended_at = now()
         WHERE w.hold_id = ANY (v_ended) AND w.status = 'offered';
        PERFORM offer_waitlist(h.event_id)
           FROM (SELECT DISTINCT h.event_id FROM holds h WHERE h.id = ANY (v_ended)
                  ORDER BY h.event_id) h;
    END IF;
    RETURN QUERY SELECT unnest(v_ended);
END $$;
