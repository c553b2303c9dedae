-- An organizer deletes a ticket type nothing was ever sold or held of; one with sales
-- can only be closed, and an event keeps at least one type. Under the event's row lock,
-- so no booking takes the type meanwhile.
-- A type someone waited for keeps its waiting list's history: it too can only be closed.
-- Outcomes: deleted, event_not_found, ticket_type_not_found, ticket_type_has_sales,
-- ticket_type_has_waitlist, last_ticket_type.

CREATE OR REPLACE FUNCTION delete_ticket_type(p_event uuid, p_type uuid)
RETURNS TABLE (outcome text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM FROM events e WHERE e.id = p_event FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'event_not_found';
        RETURN;
    END IF;
    PERFORM FROM ticket_types t WHERE t.id = p_type AND t.event_id = p_event;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'ticket_type_not_found';
    ELSIF EXISTS (SELECT FROM booking_items i WHERE i.ticket_type_id = p_type)
          OR EXISTS (SELECT FROM hold_items i WHERE i.ticket_type_id = p_type) THEN
        RETURN QUERY SELECT 'ticket_type_has_sales';
    ELSIF EXISTS (SELECT FROM waitlist_entries w WHERE w.ticket_type_id = p_type) THEN
        RETURN QUERY SELECT 'ticket_type_has_waitlist';
    ELSIF NOT EXISTS (SELECT FROM ticket_types t
                       WHERE t.event_id = p_event AND t.id <> p_type) THEN
        RETURN QUERY SELECT 'last_ticket_type';
    ELSE
        DELETE FROM ticket_types t WHERE t.id = p_type;
        RETURN QUERY SELECT 'deleted';
    END IF;
END $$;
