-- Every event is born with one free ticket type, so a client that books a `quantity`
-- alone books it. The organizer may add types, and delete this one while it has no sales.
CREATE OR REPLACE FUNCTION default_ticket_type() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ticket_types (event_id, name, price_cents) VALUES (NEW.id, 'General admission', 0);
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER default_ticket_type AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION default_ticket_type();
