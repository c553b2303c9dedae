"""Ticket types: what an event sells, each with its price, its own quota and its sales
window. Organizers keep them; anyone reads them.

The event's capacity stays the overall quota: sold plus held of all types never exceeds
it, and of one type never exceeds the type's quota (sql/functions/book_tickets.sql
decides both). An event is born with one free type, so a booking of a `quantity` alone
keeps working while the event has only one."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from aiohttp import web
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from eventbook import db
from eventbook.endpoints import ORGANIZER, PUBLIC, endpoint, json_response, path_uuid
from eventbook.errors import Outcome, Problem, validation_problem
from eventbook.events import (
    as_json,
    event_cancelled,
    event_id,
    event_not_found,
    limit_browsing,
    owned_event,
)
from eventbook.fields import Currency, Line, Moment
from eventbook.keys import POOL
from eventbook.pages import page_of, page_response

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()

TICKET_TYPES = db.query("ticket_types")
CHANGE_TICKET_TYPE = db.query("change_ticket_type")
DELETE_TICKET_TYPE = db.query("delete_ticket_type")
STATUSES = ("on_sale", "closed")


class TicketTypeSchema(Schema):
    id = fields.UUID(required=True)
    event_id = fields.UUID(required=True)
    name = fields.String(required=True)
    price_cents = fields.Integer(
        required=True, metadata={"description": "One ticket's price in the currency's minor unit."}
    )
    currency = fields.String(required=True, metadata={"description": "The event's, ISO 4217."})
    quota = fields.Integer(
        required=True, allow_none=True,
        metadata={"description": "Most tickets of this type sold and held; null: only the "
                                 "event's capacity bounds it."},
    )
    available_tickets = fields.Integer(
        required=True,
        metadata={"description": "Tickets of this type left: under its quota and the "
                                 "event's capacity alike."},
    )
    on_sale = fields.Boolean(
        required=True,
        metadata={"description": "Whether it can be booked now: open, within its sales "
                                 "window, its event scheduled and not started."},
    )
    sales_start = fields.AwareDateTime(required=True, allow_none=True)
    sales_end = fields.AwareDateTime(required=True, allow_none=True)
    max_per_booking = fields.Integer(
        required=True, allow_none=True,
        metadata={"description": "Most of this type in one booking; null: only the event's "
                                 "max_tickets_per_booking."},
    )
    status = fields.String(
        required=True, validate=validate.OneOf(STATUSES),
        metadata={"description": "closed: not sold, whatever its window."},
    )
    waitlist_length = fields.Integer(
        required=True,
        metadata={"description": "Customers waiting for this type (POST "
                                 "/api/v1/events/{id}/waitlist while it is sold out)."},
    )
    waitlist_allow_skip = fields.Boolean(
        required=True,
        metadata={"description": "Whether an entry that fits the tickets come back is offered "
                                 "them before an earlier entry that wants more."},
    )
    created_at = fields.AwareDateTime(required=True)
    updated_at = fields.AwareDateTime(required=True)


class TicketTypeChangesSchema(Schema):
    """PATCH: any of the fields; null clears quota, sales_start, sales_end, max_per_booking."""

    name = Line(validate=validate.Length(1, 200))
    price_cents = fields.Integer(
        strict=True, validate=validate.Range(0, 100_000_000),
        metadata={"description": "Applies to tickets taken from now on; booked prices stay."},
    )
    currency = Currency(
        metadata={"description": "Must be the event's, unless the event has no priced type "
                                 "and no sales yet: then the event's changes with it."},
    )
    quota = fields.Integer(strict=True, allow_none=True, validate=validate.Range(1, 1_000_000))
    sales_start = Moment(allow_none=True)
    sales_end = Moment(allow_none=True)
    max_per_booking = fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(1, 100)
    )
    status = fields.String(validate=validate.OneOf(STATUSES))
    waitlist_allow_skip = fields.Boolean(
        truthy={True}, falsy={False},
        metadata={"description": "Let an entry that fits what came back go before an earlier "
                                 "one that wants more (default false: strictly in order)."},
    )

    @validates_schema
    def _consistent(self, data: dict[str, Any], **_: Any) -> None:
        if not data:
            raise ValidationError("Send at least one field to change.")
        if not data.get("name", "x").strip():
            raise ValidationError("Must not be blank.", "name")
        start, end = data.get("sales_start"), data.get("sales_end")
        if start is not None and end is not None and end <= start:
            raise ValidationError("Must be after sales_start.", "sales_end")


class NewTicketTypeSchema(TicketTypeChangesSchema):
    name = Line(required=True, validate=validate.Length(1, 200))
    price_cents = fields.Integer(
        required=True, strict=True, validate=validate.Range(0, 100_000_000),
        metadata={"description": "One ticket's price in the currency's minor unit; 0: free."},
    )


TICKET_TYPE = TicketTypeSchema()
TICKET_TYPE_PAGE = page_of(TicketTypeSchema)


def ticket_type_not_found() -> Problem:
    return Problem(404, "ticket_type_not_found", "The event has no such ticket type.")


def ticket_type_id(request: web.Request) -> uuid.UUID:
    return path_uuid(
        request, "type_id", "ticket_type_not_found", "The event has no such ticket type."
    )


# Every outcome of change_ticket_type; a refusal is built from its row.
CHANGE_OUTCOMES: dict[str, Outcome] = {
    "created": Outcome(201),
    "updated": Outcome(200),
    "event_not_found": Outcome(refusal=lambda _: event_not_found()),
    "event_cancelled": Outcome(refusal=lambda _: event_cancelled()),
    "ticket_type_not_found": Outcome(refusal=lambda _: ticket_type_not_found()),
    "currency_mismatch": Outcome(refusal=lambda row: Problem(
        409, "currency_mismatch",
        f"This event sells in {row['currency']}; every ticket type of it does too.",
        currency=row["currency"],
    )),
    "quota_below_taken": Outcome(refusal=lambda row: Problem(
        409, "quota_below_taken",
        f"{row['taken']} tickets of this type are sold or held; the quota cannot go below that.",
        taken=row["taken"],
    )),
    "sales_end_before_start": Outcome(refusal=lambda _: validation_problem(
        {"sales_end": ["Must be after sales_start."]}
    )),
    "name_taken": Outcome(refusal=lambda _: Problem(
        409, "ticket_type_name_taken", "The event already has a ticket type of this name."
    )),
    "too_many_ticket_types": Outcome(refusal=lambda _: Problem(
        409, "too_many_ticket_types", "An event has at most 100 ticket types."
    )),
}

# Every outcome of delete_ticket_type.
DELETE_OUTCOMES: dict[str, Outcome] = {
    "deleted": Outcome(204),
    "event_not_found": Outcome(refusal=event_not_found),
    "ticket_type_not_found": Outcome(refusal=ticket_type_not_found),
    "ticket_type_has_sales": Outcome(refusal=lambda: Problem(
        409, "ticket_type_has_sales",
        "Tickets of this type were sold or held: close it (status closed) instead.",
    )),
    "ticket_type_has_waitlist": Outcome(refusal=lambda: Problem(
        409, "ticket_type_has_waitlist",
        "Customers joined this type's waiting list: close it (status closed) instead.",
    )),
    "last_ticket_type": Outcome(refusal=lambda: Problem(
        409, "last_ticket_type", "An event keeps at least one ticket type."
    )),
}


@routes.get("/api/v1/events/{id}/ticket-types")
@endpoint(
    "An event's ticket types",
    roles=PUBLIC,
    response=TICKET_TYPE_PAGE,
    problems={404: ["event_not_found"], 429: ["too_many_requests"]},
    tag="ticket types",
    description=(
        "In the order they were added, closed ones included. An event has at most 100, all "
        "on one page: `next_cursor` is always null."
    ),
)
async def list_ticket_types(request: web.Request) -> web.Response:
    await limit_browsing(request)
    rows = await request.app[POOL].fetch(TICKET_TYPES, event_id(request), None)
    # Every event has a type from its creation on, and keeps its last one.
    if not rows:
        raise event_not_found()
    return json_response(page_response(TICKET_TYPE.dump(rows, many=True), None))


@routes.get("/api/v1/events/{id}/ticket-types/{type_id}")
@endpoint(
    "One ticket type",
    roles=PUBLIC,
    response=TICKET_TYPE,
    problems={404: ["ticket_type_not_found"], 429: ["too_many_requests"]},
    tag="ticket types",
)
async def get_ticket_type(request: web.Request) -> web.Response:
    await limit_browsing(request)
    row = await request.app[POOL].fetchrow(
        TICKET_TYPES, event_id(request), ticket_type_id(request)
    )
    if row is None:
        raise ticket_type_not_found()
    return json_response(TICKET_TYPE.dump(row))


async def _change(
    request: web.Request, event: uuid.UUID, ticket_type: uuid.UUID | None, body: dict[str, Any]
) -> web.Response:
    pool = request.app[POOL]
    row = await pool.fetchrow(CHANGE_TICKET_TYPE, event, ticket_type, as_json(body))
    assert row is not None
    outcome = CHANGE_OUTCOMES[row["outcome"]]
    outcome.check(row)
    log.info(
        f"ticket_type_{row['outcome']}", event_id=str(event), ticket_type_id=str(row["id"]),
        fields=sorted(body),
    )
    changed = await pool.fetchrow(TICKET_TYPES, event, row["id"])
    return json_response(TICKET_TYPE.dump(changed), status=outcome.status)


@routes.post("/api/v1/events/{id}/ticket-types")
@endpoint(
    "Add a ticket type",
    roles=ORGANIZER,
    body=NewTicketTypeSchema(),
    response=TICKET_TYPE,
    status=201,
    problems={
        403: ["not_event_owner"],
        404: ["event_not_found"],
        409: ["currency_mismatch", "ticket_type_name_taken", "too_many_ticket_types",
              "event_cancelled"],
        422: ["validation_failed"],
    },
    tag="ticket types",
    description=(
        "Names are unique within the event. Once an event has several types, a booking "
        "names them in `items`."
    ),
)
async def create_ticket_type(request: web.Request, body: dict[str, Any]) -> web.Response:
    return await _change(request, await owned_event(request), None, body)


@routes.patch("/api/v1/events/{id}/ticket-types/{type_id}")
@endpoint(
    "Change a ticket type",
    roles=ORGANIZER,
    body=TicketTypeChangesSchema(),
    response=TICKET_TYPE,
    problems={
        403: ["not_event_owner"],
        404: ["event_not_found", "ticket_type_not_found"],
        409: ["currency_mismatch", "quota_below_taken", "ticket_type_name_taken",
              "event_cancelled"],
        422: ["validation_failed"],
    },
    tag="ticket types",
    description=(
        "Partial. The quota never goes below the tickets of the type sold and held (409 "
        "`quota_below_taken`, with `taken`). A new price applies to tickets taken from now "
        "on. `status: closed` stops its sales."
    ),
)
async def update_ticket_type(request: web.Request, body: dict[str, Any]) -> web.Response:
    event = await owned_event(request)
    return await _change(request, event, ticket_type_id(request), body)


@routes.delete("/api/v1/events/{id}/ticket-types/{type_id}")
@endpoint(
    "Delete a ticket type",
    roles=ORGANIZER,
    status=204,
    problems={
        403: ["not_event_owner"],
        404: ["event_not_found", "ticket_type_not_found"],
        409: ["ticket_type_has_sales", "ticket_type_has_waitlist", "last_ticket_type"],
    },
    tag="ticket types",
    description=(
        "Only a type nothing was ever sold or held of (else 409 `ticket_type_has_sales`: "
        "close it instead) and nobody joined the waiting list of (else 409 "
        "`ticket_type_has_waitlist`), and not the event's last one."
    ),
)
async def delete_ticket_type(request: web.Request) -> web.Response:
    event = await owned_event(request)
    ticket_type = ticket_type_id(request)
    outcome = await request.app[POOL].fetchval(DELETE_TICKET_TYPE, event, ticket_type)
    DELETE_OUTCOMES[outcome].check()
    log.info("ticket_type_deleted", event_id=str(event), ticket_type_id=str(ticket_type))
    return web.Response(status=204)
