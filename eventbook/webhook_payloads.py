"""What a webhook says: its event types, its webhook-id, and its body.

The body follows the Standard Webhooks payload shape, versioned:

    {"type": "booking.created", "timestamp": "<when the change happened>",
     "api_version": "v1", "data": {<the booking as GET /api/v1/bookings/{id} returns it>}}

`data` is the object as the API returns it when the message is fanned out to the
endpoints (moments after the change): a booking for booking.*, a hold for hold.expired,
an event for event.*. Its shape is that of the API version named by `api_version`.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import asyncpg

from eventbook import db
from eventbook.representations import BOOKING, EVENT, HOLD

BOOKING_WITH_ORGANIZER = db.query("booking_with_organizer")
HOLD_WITH_ORGANIZER = db.query("webhook_hold")
EVENT_BY_ID = db.query("event_by_id")

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


async def build_body(
    pool: asyncpg.Pool, kind: str, payload: dict[str, Any], at: dt.datetime
) -> tuple[uuid.UUID, uuid.UUID, str] | None:
    """(organizer, event, body) of the change `kind`; None when its object is gone."""
    if kind.startswith("booking."):
        row = await pool.fetchrow(BOOKING_WITH_ORGANIZER, uuid.UUID(str(payload["booking_id"])))
        data = None if row is None else BOOKING.dump(row)
    elif kind == "hold.expired":
        row = await pool.fetchrow(HOLD_WITH_ORGANIZER, uuid.UUID(str(payload["hold_id"])))
        data = None if row is None else HOLD.dump(row)
    else:
        row = await pool.fetchrow(EVENT_BY_ID, uuid.UUID(str(payload["event_id"])))
        data = None if row is None else EVENT.dump(row)
    if row is None or data is None:
        return None
    event_id = row["id"] if kind.startswith("event.") else row["event_id"]
    return row["organizer_id"], event_id, envelope(kind, at, data)
