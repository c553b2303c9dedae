-- Organizer webhooks: endpoints that hear of bookings, holds and event changes, and
-- one delivery record per endpoint and message, which is also the delivery's durable
-- schedule (webhook_deliveries.next_attempt_at).

CREATE TABLE webhook_endpoints (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organizer_id          uuid NOT NULL REFERENCES users (id),
    url                   text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    description           text NOT NULL DEFAULT '',
    -- The event types it wants ('*': all of them).
    event_types           text[] NOT NULL CHECK (cardinality(event_types) >= 1),
    -- Only these of the organizer's events; NULL: all of them.
    event_ids             uuid[],
    -- enabled: delivered to; paused (by its owner, or after failing for long): its
    -- deliveries are recorded and wait until it is enabled again.
    status                text NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'paused')),
    paused_reason         text CHECK (paused_reason IN ('owner', 'failing')),
    paused_at             timestamptz,
    -- When the owner was mailed that it was paused for failing.
    pause_notified_at     timestamptz,
    -- Standard Webhooks secrets (whsec_...). Until previous_secret_until, messages are
    -- signed with the previous secret too, so receivers can switch at their pace.
    secret                text NOT NULL,
    previous_secret       text,
    previous_secret_until timestamptz,
    -- Failed attempts since its last success, and when that run of failures began.
    consecutive_failures  integer NOT NULL DEFAULT 0,
    failing_since         timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_endpoints_paused CHECK ((status = 'paused') = (paused_reason IS NOT NULL))
);
CREATE INDEX webhook_endpoints_of_organizer ON webhook_endpoints (organizer_id, created_at, id);

CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    endpoint_id      uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    -- The webhook-id header: the same for every attempt, and for every endpoint that
    -- gets the message, so receivers can drop a repeat.
    message_id       text NOT NULL,
    event_type       text NOT NULL,
    -- The body exactly as sent (it is signed as is), the same at every attempt.
    body             text NOT NULL,
    -- When the change happened (its outbox row was written): the delivery lag's start.
    occurred_at      timestamptz NOT NULL,
    -- pending: to be attempted at next_attempt_at (while an attempt is in flight,
    -- next_attempt_at is its lease: a worker that died mid-attempt leaves it due again);
    -- succeeded: a 2xx came back; failed: every attempt of the schedule failed.
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    last_attempt_at  timestamptz,
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    CONSTRAINT webhook_deliveries_once UNIQUE (endpoint_id, message_id),
    CONSTRAINT webhook_deliveries_scheduled CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL))
);
-- What the dispatchers look at: each endpoint's due deliveries, oldest first.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
-- Deliveries that are over, by when: those past EVENTBOOK_WEBHOOK_RETENTION_DAYS go.
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (finished_at)
    WHERE status <> 'pending';
-- An endpoint's deliveries, newest first (its deliveries list).
CREATE INDEX webhook_deliveries_of_endpoint
    ON webhook_deliveries (endpoint_id, created_at DESC, id DESC);
-- Deliveries given up on, which `eventbook queues` counts (those succeeded, the bulk of
-- the table, are never read for it).
CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (endpoint_id, finished_at)
    WHERE status = 'failed';
-- The reconciler looks, event by event of the organizers with endpoints, for the
-- changes of the last day whose webhook message was lost: bookings cancelled by their
-- customer, and holds that expired, by when that happened. Both are few next to the
-- bookings made, which bookings_by_event finds.
CREATE INDEX bookings_cancelled_by_customer ON bookings (event_id, cancelled_at)
    WHERE cancel_reason = 'customer';
CREATE INDEX holds_expired ON holds (event_id, ended_at) WHERE status = 'expired';
