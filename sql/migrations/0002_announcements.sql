-- Event-change announcements: one row per change that notifies attendees, and one row
-- per page of attendees handed to the senders, so that a fan-out interrupted anywhere
-- resumes where it was and the organizer can watch its progress.

CREATE TABLE announcements (
    event_id         uuid NOT NULL REFERENCES events (id),
    version          integer NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('event_updated', 'event_cancelled')),
    changed_at       timestamptz NOT NULL,
    recipients_total integer CHECK (recipients_total >= 0),
    pages_total      integer CHECK (pages_total >= 0),
    expanded_through uuid,
    started_at       timestamptz,
    finished_at      timestamptz,
    PRIMARY KEY (event_id, version)
);

CREATE TABLE announcement_pages (
    event_id   uuid NOT NULL,
    version    integer NOT NULL,
    page       integer NOT NULL CHECK (page >= 0),
    after_user uuid,
    upto_user  uuid NOT NULL,
    recipients integer NOT NULL,
    done_at    timestamptz,
    PRIMARY KEY (event_id, version, page),
    FOREIGN KEY (event_id, version) REFERENCES announcements (event_id, version)
);
