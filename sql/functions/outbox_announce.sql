-- The announcement exists from the moment the change commits (same transaction as the
-- outbox row), so a fan-out of an older version can tell at once that it is superseded.
CREATE OR REPLACE FUNCTION outbox_announce() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO announcements (event_id, version, kind, changed_at)
    VALUES ((NEW.payload ->> 'event_id')::uuid, (NEW.payload ->> 'version')::integer,
            NEW.kind, NEW.created_at)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER outbox_announce AFTER INSERT ON outbox
    FOR EACH ROW WHEN (NEW.topic = 'notifications')
    EXECUTE FUNCTION outbox_announce();
