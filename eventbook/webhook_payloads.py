"""What a webhook says: its event types, its webhook-id, and its body.

The body follows the Standard Webhooks payload shape, versioned:

    {"type": "booking.created", "timestamp": "<when the change happened>",
     "api_version": "v1", "data": {<the booking as GET /api/v1/bookings/{id} returns it>}}

`data` is the object as the API returns it when the message is fanned out to the
endpoints (moments after the change): a booking for booking.*, a hold for hold.expired,
an event for event.*. Its shape is that of the API version named by `api_version`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from typing import Any

import asyncpg

from eventbook import db
from eventbook.representations import BOOKING, EVENT, HOLD

BOOKINGS = db.query("webhook_bookings")
HOLDS = db.query("webhook_holds")
EVENTS = db.query("webhook_events")

API_VERSION = "v1"
# The event types an endpoint may ask for; '*' is all of them.
EVENT_TYPES = ("booking.created", "booking.cancelled", "hold.expired", "event.updated",
               "event.cancelled")
ALL_TYPES = "*"
# Sent by POST /api/v1/webhooks/{id}/ping, whatever the endpoint asked for.
PING = "webhook.ping"
# The key of each type's change in its outbox payload: the webhook-id is the type and
# these values, so the same change (a message the stream delivered twice, one the
# reconciler put back) has the same id at every endpoint and attempt, and SQL can name it.
MESSAGE_KEYS = {
    "booking.created": ("booking_id",),
    "booking.cancelled": ("booking_id",),
    "hold.expired": ("hold_id",),
    "event.updated": ("event_id", "version"),
    "event.cancelled": ("event_id", "version"),
}


def message_id(kind: str, payload: dict[str, Any]) -> str:
    """The webhook-id of the change `kind` described by its outbox `payload`:
    msg_booking.created_<booking id>, msg_event.updated_<event id>_<version>, ..."""
    return "_".join(["msg", kind, *(str(payload[key]) for key in MESSAGE_KEYS[kind])])


def ping_message_id() -> str:
    return f"msg_{PING}_{uuid.uuid4()}"


def envelope(kind: str, at: dt.datetime, data: dict[str, Any]) -> str:
    """The body as sent and signed: compact JSON."""
    return json.dumps(
        {"type": kind, "timestamp": at.astimezone(dt.UTC).isoformat(),
         "api_version": API_VERSION, "data": data},
        separators=(",", ":"),
    )


@dataclasses.dataclass(frozen=True)
class Built:
    """A change's webhook, ready to be recorded for its endpoints."""

    organizer_id: uuid.UUID
    event_id: uuid.UUID
    message_id: str
    kind: str
    body: str
    occurred_at: dt.datetime


# Where each type's object is read from, and which payload key names it.
_SOURCES = {
    "booking": (BOOKINGS, "booking_id", BOOKING),
    "hold": (HOLDS, "hold_id", HOLD),
    "event": (EVENTS, "event_id", EVENT),
}


async def build_bodies(
    pool: asyncpg.Pool, changes: list[tuple[str, dict[str, Any], dt.datetime]]
) -> list[Built | None]:
    """The webhook of each change (kind, outbox payload, when), one query per kind of
    object for all of them; None for a change whose object is gone."""
    objects: dict[tuple[str, uuid.UUID], asyncpg.Record] = {}
    for source, (query, key, _) in _SOURCES.items():
        ids = {uuid.UUID(str(payload[key])) for kind, payload, _ in changes
               if kind.split(".")[0] == source}
        if ids:
            for row in await pool.fetch(query, list(ids)):
                objects[source, row["id"]] = row
    built: list[Built | None] = []
    for kind, payload, at in changes:
        source = kind.split(".")[0]
        _, key, schema = _SOURCES[source]
        row = objects.get((source, uuid.UUID(str(payload[key]))))
        if row is None:
            built.append(None)
            continue
        event_id = row["id"] if source == "event" else row["event_id"]
        built.append(Built(row["organizer_id"], event_id, message_id(kind, payload), kind,
                           envelope(kind, at, schema.dump(row)), at))
    return built
