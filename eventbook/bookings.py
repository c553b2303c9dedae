"""Bookings: book tickets, list and read them, cancel them."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

import asyncpg
import structlog
from aiohttp import web
from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from eventbook import db
from eventbook.auth import account_gone, can_read_booking, principal
from eventbook.booking_batcher import Booked, BookingRequest, Item
from eventbook.endpoints import (
    CUSTOMER,
    SIGNED_IN,
    endpoint,
    json_response,
    path_uuid,
    single_header,
)
from eventbook.errors import Outcome, Problem, validation_problem
from eventbook.events import event_id, event_not_found
from eventbook.keys import BOOKING_BATCHER, CONFIG, METRICS, POOL, RATE_LIMITER, REQUEST_ID
from eventbook.pages import (
    PageQuery,
    fetch_page,
    page_of,
    page_response,
)
from eventbook.representations import BOOKING, BookingSchema

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()

BOOKINGS_OF_USER = db.query("bookings_of_user")
BOOKINGS_OF_USER_AFTER = db.query("bookings_of_user_after")
BOOKING_WITH_ORGANIZER = db.query("booking_with_organizer")
CANCEL_BOOKING = db.query("cancel_booking")
IDEMPOTENCY_KEY = "Idempotency-Key"
# Printable ASCII: the key is stored and compared as is, and may be logged.
_SANE_KEY = re.compile(r"[\x20-\x7e]{1,255}")


class NewItemSchema(Schema):
    ticket_type_id = fields.UUID(required=True)
    quantity = fields.Integer(strict=True, required=True, validate=validate.Range(1, 100))


class NewBookingSchema(Schema):
    """A `quantity` of the event's only ticket type, or `items` of named types."""

    quantity = fields.Integer(
        strict=True, validate=validate.Range(1, 100),
        metadata={"description": (
            "Tickets of the event's only ticket type (default 1), at most the event's "
            "max_tickets_per_booking. Not with `items`."
        )},
    )
    items = fields.List(
        fields.Nested(NewItemSchema), validate=validate.Length(1, 20),
        metadata={"description": (
            "Tickets by type, all taken or none; each type once, at most 100 tickets and the "
            "event's max_tickets_per_booking in all. Not with `quantity`."
        )},
    )

    @validates_schema
    def _one_way(self, data: dict[str, Any], **_: Any) -> None:
        if "quantity" in data and "items" in data:
            raise ValidationError("Give quantity or items, not both.", "items")
        types = [item["ticket_type_id"] for item in data.get("items", ())]
        if len(set(types)) != len(types):
            raise ValidationError("Name each ticket type once.", "items")
        if sum(item["quantity"] for item in data.get("items", ())) > 100:
            raise ValidationError("At most 100 tickets per booking.", "items")

    @post_load
    def _to_items(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        items: tuple[Item, ...]
        if "items" in data:
            items = tuple((item["ticket_type_id"], item["quantity"]) for item in data["items"])
        else:
            items = ((None, data.get("quantity", 1)),)
        # The field a refusal of the request's size is about.
        return {"items": items, "field": "items" if "items" in data else "quantity"}


BOOKING_PAGE = page_of(BookingSchema)


def booking_not_found() -> Problem:
    return Problem(404, "booking_not_found", "There is no such booking.")


def booking_id(request: web.Request) -> uuid.UUID:
    return path_uuid(request, "id", "booking_not_found", "There is no such booking.")


def idempotency_key(request: web.Request) -> str | None:
    key = single_header(request, IDEMPOTENCY_KEY)
    if key is None:
        return None
    if not _SANE_KEY.fullmatch(key):
        raise validation_problem(
            {IDEMPOTENCY_KEY: ["Use 1 to 255 printable ASCII characters."]}
        )
    return key


def fingerprint(event: uuid.UUID, items: tuple[Item, ...], hold: bool = False) -> str:
    """What a retry must repeat to count as the same request. A booking of a quantity
    alone keeps the form keys were stored with before ticket types."""
    if not hold and len(items) == 1 and items[0][0] is None:
        return hashlib.sha256(f"{event}:{items[0][1]}".encode()).hexdigest()
    lines = ",".join(sorted(f"{ticket_type}x{quantity}" for ticket_type, quantity in items))
    return hashlib.sha256(f"{event}:{'hold' if hold else 'booking'}:{lines}".encode()).hexdigest()


def _sold_out(decided: Booked, _: str) -> Problem:
    left = decided.available
    of = " of this ticket type" if decided.ticket_type is not None else ""
    many = left != 1
    return Problem(
        409, "sold_out",
        f"No tickets{of} are left." if not left
        else f"Only {left} ticket{'s' if many else ''}{of} {'are' if many else 'is'} left.",
        available_tickets=left,
        ticket_type_id=None if decided.ticket_type is None else str(decided.ticket_type),
    )


def _too_many_tickets(decided: Booked, field: str) -> Problem:
    if decided.ticket_type is not None:
        return validation_problem({"items": [
            f"At most {decided.allowed} tickets of ticket type {decided.ticket_type} per booking."
        ]})
    return validation_problem(
        {field: [f"At most {decided.allowed} tickets per booking for this event."]}
    )


def _customer_limit_reached(decided: Booked, _: str) -> Problem:
    left = decided.allowed
    return Problem(
        409, "customer_limit_reached",
        "You hold as many tickets as one customer may for this event." if not left
        else f"You may book only {left} more ticket{'s' if left != 1 else ''} for this event.",
        customer_tickets_left=left,
    )


# Every outcome of book_tickets, for a booking or a hold: the answer, and the label of
# the bookings counter. A refusal is built from the decision and the request's field.
BOOK_OUTCOMES: dict[str, Outcome] = {
    "created": Outcome(201, metric="created"),
    "replayed": Outcome(200, metric="replayed"),
    "key_reused": Outcome(refusal=lambda *_: Problem(
        422, "idempotency_key_reused",
        "This Idempotency-Key was used for a different request.",
    )),
    "event_not_found": Outcome(refusal=lambda *_: event_not_found()),
    "event_not_bookable": Outcome(metric="not_bookable", refusal=lambda *_: Problem(
        409, "event_not_bookable", "The event is cancelled or has already started."
    )),
    "ticket_type_required": Outcome(refusal=lambda *_: Problem(
        422, "ticket_type_required",
        "This event sells several ticket types: name them in items.",
    )),
    "unknown_ticket_type": Outcome(refusal=lambda decided, _: Problem(
        422, "unknown_ticket_type", "This event has no such ticket type.",
        ticket_type_id=str(decided.ticket_type),
    )),
    "ticket_type_not_on_sale": Outcome(refusal=lambda decided, _: Problem(
        409, "ticket_type_not_on_sale",
        "This ticket type is closed, or outside its sales window.",
        ticket_type_id=str(decided.ticket_type),
    )),
    "too_many_tickets": Outcome(refusal=_too_many_tickets),
    "customer_limit_reached": Outcome(metric="customer_limit", refusal=_customer_limit_reached),
    "sold_out": Outcome(metric="sold_out", refusal=_sold_out),
}

# The problems book_tickets may answer, by status, for the document.
TAKE_PROBLEMS = {
    404: ["event_not_found"],
    409: ["sold_out", "event_not_bookable", "customer_limit_reached", "ticket_type_not_on_sale"],
    422: ["validation_failed", "idempotency_key_reused", "ticket_type_required",
          "unknown_ticket_type"],
    429: ["too_many_requests"],
}


async def limit_booking(request: web.Request, user: uuid.UUID) -> None:
    """429 past EVENTBOOK_BOOKING_RATE requests a second of one customer that take an
    event's row lock: bookings, holds and joining a waiting list."""
    config = request.app[CONFIG]
    if config.booking_rate > 0:
        await request.app[RATE_LIMITER].enforce(
            "booking", str(user), config.booking_rate, 1,
            "Too many bookings; wait a second and try again.",
        )


async def take(request: web.Request, body: dict[str, Any], hold: bool) -> Booked:
    """Decide a request for tickets, as a booking or a hold, through the batcher; raise
    its refusal. Counts its outcome."""
    user = principal(request)
    event = event_id(request)
    key = idempotency_key(request)
    await limit_booking(request, user.id)
    items = body["items"]
    # Requests of one event that arrive together are decided in one call (see
    # eventbook.booking_batcher); this one still gets its own decision.
    try:
        decided = await request.app[BOOKING_BATCHER].book(
            event,
            BookingRequest(user.id, items, key, fingerprint(event, items, hold),
                           request[REQUEST_ID], hold),
        )
    except asyncpg.ForeignKeyViolationError:
        raise account_gone() from None
    outcome = BOOK_OUTCOMES[decided.outcome]
    if outcome.metric is not None and not hold:
        request.app[METRICS].booking_outcome(outcome.metric)
    outcome.check(decided, body["field"])
    return decided

# Every outcome of cancel_booking.
CANCEL_OUTCOMES: dict[str, Outcome] = {
    "cancelled": Outcome(200),
    "booking_not_found": Outcome(refusal=booking_not_found),
    "already_cancelled": Outcome(refusal=lambda: Problem(
        409, "booking_already_cancelled", "The booking is already cancelled."
    )),
    "event_started": Outcome(refusal=lambda: Problem(
        409, "event_started", "The event has started; its bookings can no longer be cancelled."
    )),
}


@routes.post("/api/v1/events/{id}/bookings")
@endpoint(
    "Book tickets",
    roles=CUSTOMER,
    body=NewBookingSchema(),
    response=BOOKING,
    status=201,
    headers=(IDEMPOTENCY_KEY,),
    problems=TAKE_PROBLEMS,
    tag="bookings",
    description=(
        "Takes the tickets at once, all items or none, or answers 409 `sold_out` with "
        "`available_tickets` (and `ticket_type_id` when a type's quota is what ran out). "
        "`quantity` alone books the event's only ticket type: 422 `ticket_type_required` "
        "when it has several. Each item's price is frozen into the booking. "
        "A closed ticket type, or one outside its sales window, is 409 "
        "`ticket_type_not_on_sale`; a type not of this event 422 `unknown_ticket_type`. "
        "When the event has a `max_tickets_per_customer`, the customer's confirmed bookings "
        "and live holds of it and this one together must not exceed it: 409 "
        "`customer_limit_reached` with "
        "`customer_tickets_left`. "
        "With an `Idempotency-Key` header (1..255 printable ASCII characters), a retry by the "
        "same customer with the same key and body, at once or concurrently, makes no second "
        "booking: the first answer is 201, every replay 200 with the same booking. The same "
        "key with another event, quantity or items is 422 `idempotency_key_reused`. Keys are kept "
        "as long as the booking."
    ),
)
async def book(request: web.Request, body: dict[str, Any]) -> web.Response:
    decided = await take(request, body, hold=False)
    booking = decided.booking
    assert booking is not None
    if decided.outcome == "created":
        log.info(
            "booking_created", booking_id=str(booking["id"]), event_id=str(booking["event_id"]),
            quantity=booking["quantity"], available=decided.available,
        )
    return json_response(BOOKING.dump(booking), status=BOOK_OUTCOMES[decided.outcome].status)


@routes.get("/api/v1/bookings")
@endpoint(
    "My bookings, newest first",
    roles=CUSTOMER,
    query=PageQuery(),
    response=BOOKING_PAGE,
    tag="bookings",
    description="Cancelled bookings included.",
)
async def list_bookings(request: web.Request, query: dict[str, Any]) -> web.Response:
    page, next_cursor = await fetch_page(
        request.app[POOL], BOOKINGS_OF_USER, BOOKINGS_OF_USER_AFTER, principal(request).id, query,
        lambda row: (row["created_at"], row["id"]),
    )
    return json_response(page_response(BOOKING.dump(page, many=True), next_cursor))


@routes.get("/api/v1/bookings/{id}")
@endpoint(
    "One booking",
    roles=SIGNED_IN,
    response=BOOKING,
    problems={404: ["booking_not_found"]},
    tag="bookings",
    description="For its customer and its event's organizer; anyone else gets 404.",
)
async def get_booking(request: web.Request) -> web.Response:
    row = await request.app[POOL].fetchrow(BOOKING_WITH_ORGANIZER, booking_id(request))
    # Someone else's booking is answered as if it did not exist: nothing is learnt.
    if row is None or not can_read_booking(principal(request), row["user_id"], row["organizer_id"]):
        raise booking_not_found()
    return json_response(BOOKING.dump(row))


@routes.post("/api/v1/bookings/{id}/cancel")
@endpoint(
    "Cancel my booking",
    roles=CUSTOMER,
    response=BOOKING,
    problems={404: ["booking_not_found"], 409: ["booking_already_cancelled", "event_started"]},
    tag="bookings",
    description=(
        "Its tickets go back to the event at once. Once the event has started the booking "
        "stands: 409 `event_started`."
    ),
)
async def cancel_booking(request: web.Request) -> web.Response:
    booking = booking_id(request)
    row = await request.app[POOL].fetchrow(
        CANCEL_BOOKING, booking, principal(request).id, request[REQUEST_ID]
    )
    assert row is not None
    CANCEL_OUTCOMES[row["outcome"]].check()
    log.info("booking_cancelled", booking_id=str(booking))
    return json_response(BOOKING.dump(row))
