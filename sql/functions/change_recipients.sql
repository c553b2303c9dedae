-- Who an event change is for, in one place for the fan-out's queries. A plain SQL
-- function, so the planner inlines it and the callers' user-id range reaches the index.
CREATE OR REPLACE FUNCTION change_recipients(p_event uuid, p_kind text, p_changed_at timestamptz)
RETURNS TABLE (user_id uuid) LANGUAGE sql STABLE AS $$
    SELECT b.user_id
      FROM bookings b
     WHERE b.event_id = p_event
       AND CASE WHEN p_kind = 'event_cancelled'
                THEN b.status = 'cancelled' AND b.cancel_reason = 'event_cancelled'
                ELSE b.status = 'confirmed' END
       -- A booking made after the change was made with the new details.
       AND b.created_at <= p_changed_at
$$;
