-- Tells the relay, which LISTENs on eventbook_outbox, that outbox rows were written.
CREATE OR REPLACE FUNCTION outbox_wake() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Identical notifications in one transaction are delivered once.
    PERFORM pg_notify('eventbook_outbox', '');
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER outbox_wake AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_wake();
