-- Whether some endpoint of the event's organizer wants the event type: the stored
-- procedures write a webhooks outbox row only then, so organizers without webhooks
-- cost one index probe per change. Paused endpoints count: their deliveries wait.
CREATE OR REPLACE FUNCTION webhook_wanted(p_event uuid, p_type text)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT FROM events e JOIN webhook_endpoints w ON w.organizer_id = e.organizer_id
         WHERE e.id = p_event
           AND (p_type = ANY (w.event_types) OR '*' = ANY (w.event_types))
           AND (w.event_ids IS NULL OR p_event = ANY (w.event_ids)))
$$;
