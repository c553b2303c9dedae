"""The waiting list: customers who found a ticket type sold out wait in order, and the
tickets that come back are offered to them before anyone else can buy them.

An offer is a hold in the customer's name (EVENTBOOK_WAITLIST_OFFER_SECONDS long),
confirmed, released or expired like any hold. Who gets an offer is decided in the
database, in the same transaction that gives the tickets back
(sql/functions/offer_waitlist.sql), and the offer mail follows through the outbox."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import structlog
from aiohttp import web
from marshmallow import Schema, fields, validate

from eventbook import db
from eventbook.auth import account_gone, principal
from eventbook.bookings import limit_booking
from eventbook.endpoints import CUSTOMER, ORGANIZER, endpoint, json_response, path_uuid
from eventbook.errors import Outcome, Problem, validation_problem
from eventbook.events import event_id, event_not_found, owned_event
from eventbook.keys import POOL
from eventbook.pages import (
    BIGINT,
    PageQuery,
    decode_cursor,
    fetch_page,
    page_of,
    page_response,
    split_page,
)

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()

JOIN = db.query("join_waitlist")
LEAVE = db.query("leave_waitlist")
ENTRY = db.query("waitlist_entry")
OF_USER = db.query("waitlist_of_user")
OF_USER_AFTER = db.query("waitlist_of_user_after")
OF_EVENT = db.query("waitlist_of_event")
STATUSES = (
    "waiting", "offered", "accepted", "expired", "declined", "left", "lapsed", "cancelled"
)


class EntrySchema(Schema):
    id = fields.UUID(required=True)
    event_id = fields.UUID(required=True)
    ticket_type_id = fields.UUID(required=True)
    quantity = fields.Integer(required=True)
    status = fields.String(
        required=True, validate=validate.OneOf(STATUSES),
        metadata={"description": (
            "waiting; offered (hold_id holds the tickets until offer_expires_at: confirm "
            "or release it as any hold); then accepted, expired, declined, left, lapsed "
            "(its turn came when the customer already had as many tickets as the event "
            "allows one customer) or cancelled (with the event)."
        )},
    )
    position = fields.Integer(
        required=True, allow_none=True,
        metadata={"description": "While waiting: its place in the type's queue, 1 next."},
    )
    hold_id = fields.UUID(required=True, allow_none=True)
    offer_expires_at = fields.AwareDateTime(required=True, allow_none=True)
    created_at = fields.AwareDateTime(required=True)
    offered_at = fields.AwareDateTime(required=True, allow_none=True)
    ended_at = fields.AwareDateTime(required=True, allow_none=True)


class WaiterSchema(EntrySchema):
    """An entry as its event's organizer sees it."""

    user_id = fields.UUID(required=True)
    name = fields.String(required=True)
    email = fields.String(required=True)


class NewEntrySchema(Schema):
    ticket_type_id = fields.UUID(
        load_default=None,
        metadata={"description": "The sold-out type; may be left out while the event has "
                                 "only one."},
    )
    quantity = fields.Integer(
        strict=True, load_default=1, validate=validate.Range(1, 100),
        metadata={"description": "Tickets wanted, offered all at once; at most the type's "
                                 "and the event's per-booking maximum."},
    )


class EventListQuery(PageQuery):
    ticket_type_id = fields.UUID(load_default=None, metadata={"description": "Only this type."})
    status = fields.String(
        load_default=None, validate=validate.OneOf(STATUSES),
        metadata={"description": "Only entries in this status."},
    )


ENTRY_SCHEMA = EntrySchema()
ENTRY_PAGE = page_of(EntrySchema)
WAITER = WaiterSchema()
WAITER_PAGE = page_of(WaiterSchema)


def entry_not_found() -> Problem:
    return Problem(404, "waitlist_entry_not_found", "There is no such waiting-list entry.")


def _type_problem(code: str, status: int, detail: str) -> Any:
    def refusal(row: asyncpg.Record, body: dict[str, Any]) -> Problem:
        named = body["ticket_type_id"]
        return Problem(status, code, detail, ticket_type_id=None if named is None else str(named))
    return refusal


def _tickets_available(row: asyncpg.Record, _: Any) -> Problem:
    left = row["available"]
    return Problem(
        409, "tickets_available",
        f"{left} ticket{'s are' if left != 1 else ' is'} on sale: book instead of waiting.",
        available_tickets=left,
    )


def _customer_limit(row: asyncpg.Record, _: Any) -> Problem:
    left = row["allowed"]
    return Problem(
        409, "customer_limit_reached",
        "You hold as many tickets as one customer may for this event." if not left
        else f"You may take only {left} more ticket{'s' if left != 1 else ''} for this event.",
        customer_tickets_left=left,
    )


# Every outcome of join_waitlist; a refusal is built from its row and the request body.
JOIN_OUTCOMES: dict[str, Outcome] = {
    "created": Outcome(201),
    "event_not_found": Outcome(refusal=lambda *_: event_not_found()),
    "event_not_bookable": Outcome(refusal=lambda *_: Problem(
        409, "event_not_bookable", "The event is cancelled or has already started."
    )),
    "ticket_type_required": Outcome(refusal=lambda *_: Problem(
        422, "ticket_type_required", "This event sells several ticket types: name one."
    )),
    "unknown_ticket_type": Outcome(refusal=_type_problem(
        "unknown_ticket_type", 422, "This event has no such ticket type."
    )),
    "ticket_type_not_on_sale": Outcome(refusal=_type_problem(
        "ticket_type_not_on_sale", 409, "This ticket type is closed, or outside its sales window."
    )),
    "too_many_tickets": Outcome(refusal=lambda row, _: validation_problem(
        {"quantity": [f"At most {row['allowed']} tickets per booking: an offer is booked whole."]}
    )),
    "customer_limit_reached": Outcome(refusal=_customer_limit),
    "tickets_available": Outcome(refusal=_tickets_available),
    "already_waiting": Outcome(refusal=lambda row, _: Problem(
        409, "already_on_waitlist",
        "You are on this ticket type's waiting list already.", entry_id=str(row["id"]),
    )),
}

# Every outcome of leave_waitlist.
LEAVE_OUTCOMES: dict[str, Outcome] = {
    "left": Outcome(204),
    "declined": Outcome(204),
    "ended": Outcome(204),
    "entry_not_found": Outcome(refusal=entry_not_found),
    "offer_accepted": Outcome(refusal=lambda: Problem(
        409, "offer_accepted",
        "The offer was confirmed into a booking; cancel the booking instead.",
    )),
}


def _entry_id(request: web.Request) -> uuid.UUID:
    return path_uuid(
        request, "id", "waitlist_entry_not_found", "There is no such waiting-list entry."
    )


@routes.post("/api/v1/events/{id}/waitlist")
@endpoint(
    "Wait for a sold-out ticket type",
    roles=CUSTOMER,
    body=NewEntrySchema(),
    response=ENTRY_SCHEMA,
    status=201,
    problems={
        404: ["event_not_found"],
        409: ["tickets_available", "already_on_waitlist", "event_not_bookable",
              "ticket_type_not_on_sale", "customer_limit_reached"],
        422: ["validation_failed", "ticket_type_required", "unknown_ticket_type"],
        429: ["too_many_requests"],
    },
    tag="waiting list",
    description=(
        "Only while nothing of the type can be booked (else 409 `tickets_available`, with "
        "`available_tickets`); one live entry per customer and type. Tickets that come "
        "back (a cancelled booking, a released or expired hold, a raised quota or "
        "capacity) go to the entries in order of joining, before anyone else can book "
        "them: each gets an offer, a hold of its `quantity` in its customer's name "
        "(EVENTBOOK_WAITLIST_OFFER_SECONDS) and a `waitlist_offer` mail. An entry that "
        "wants more than has come back waits until enough has, and those behind it wait "
        "too, unless the type's `waitlist_allow_skip` lets smaller entries go first."
    ),
)
async def join(request: web.Request, body: dict[str, Any]) -> web.Response:
    user = principal(request).id
    # Joining takes the event's row lock, as a booking does: the same budget.
    await limit_booking(request, user)
    try:
        row = await request.app[POOL].fetchrow(
            JOIN, event_id(request), body["ticket_type_id"], user, body["quantity"]
        )
    except asyncpg.ForeignKeyViolationError:
        raise account_gone() from None
    assert row is not None
    outcome = JOIN_OUTCOMES[row["outcome"]]
    outcome.check(row, body)
    log.info(
        "waitlist_joined", entry_id=str(row["id"]), event_id=str(row["event_id"]),
        ticket_type_id=str(row["ticket_type_id"]), quantity=row["quantity"],
        position=row["position"],
    )
    return json_response(ENTRY_SCHEMA.dump(row), status=outcome.status)


@routes.get("/api/v1/me/waitlist")
@endpoint(
    "My waiting-list entries, newest first",
    roles=CUSTOMER,
    query=PageQuery(),
    response=ENTRY_PAGE,
    tag="waiting list",
    description="Ended ones included; `position` while waiting.",
)
async def my_entries(request: web.Request, query: dict[str, Any]) -> web.Response:
    page, next_cursor = await fetch_page(
        request.app[POOL], OF_USER, OF_USER_AFTER, principal(request).id, query,
        lambda row: (row["created_at"], row["id"]),
    )
    return json_response(page_response(ENTRY_SCHEMA.dump(page, many=True), next_cursor))


@routes.get("/api/v1/waitlist/{id}")
@endpoint(
    "One of my waiting-list entries",
    roles=CUSTOMER,
    response=ENTRY_SCHEMA,
    problems={404: ["waitlist_entry_not_found"]},
    tag="waiting list",
    description="For its customer; anyone else gets 404.",
)
async def get_entry(request: web.Request) -> web.Response:
    entry = await request.app[POOL].fetchrow(ENTRY, _entry_id(request), principal(request).id)
    if entry is None:
        raise entry_not_found()
    return json_response(ENTRY_SCHEMA.dump(entry))


@routes.delete("/api/v1/waitlist/{id}")
@endpoint(
    "Leave the waiting list",
    roles=CUSTOMER,
    status=204,
    problems={404: ["waitlist_entry_not_found"], 409: ["offer_accepted"]},
    tag="waiting list",
    description=(
        "A waiting entry leaves the queue; an offered one declines its offer (its hold is "
        "released and goes to the next in line). An entry already over answers 204 too; "
        "one whose offer was confirmed is 409 `offer_accepted`."
    ),
)
async def leave(request: web.Request) -> web.Response:
    entry = _entry_id(request)
    outcome = await request.app[POOL].fetchval(LEAVE, entry, principal(request).id)
    LEAVE_OUTCOMES[outcome].check()
    if outcome in ("left", "declined"):
        log.info("waitlist_" + outcome, entry_id=str(entry))
    return web.Response(status=204)


@routes.get("/api/v1/events/{id}/waitlist")
@endpoint(
    "An event's waiting list",
    roles=ORGANIZER,
    query=EventListQuery(),
    response=WAITER_PAGE,
    problems={403: ["not_event_owner"], 404: ["event_not_found"]},
    tag="waiting list",
    description=(
        "In the order of joining, ended entries included unless `status` says otherwise. "
        "Each ticket type shows its `waitlist_length`."
    ),
)
async def event_list(request: web.Request, query: dict[str, Any]) -> web.Response:
    event = await owned_event(request)
    after = 0
    if query["cursor"] is not None:
        (after,) = decode_cursor(query["cursor"], BIGINT)
    rows = await request.app[POOL].fetch(
        OF_EVENT, event, query["limit"] + 1, query["ticket_type_id"], query["status"], after
    )
    page, next_cursor = split_page(rows, query["limit"], lambda row: (row["seq"],))
    return json_response(page_response(WAITER.dump(page, many=True), next_cursor))

