"""Bookings: book tickets, list and read them, cancel them."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

import asyncpg
import structlog
from aiohttp import web
from marshmallow import Schema, fields, validate

from eventbook.auth import can_read_booking, principal
from eventbook.booking_batcher import BookingRequest
from eventbook.endpoints import (
    CUSTOMER,
    SIGNED_IN,
    endpoint,
    json_response,
    path_uuid,
    single_header,
)
from eventbook.errors import Problem, validation_problem
from eventbook.events import event_id, event_not_found
from eventbook.keys import BOOKING_BATCHER, CONFIG, METRICS, POOL, RATE_LIMITER, REQUEST_ID
from eventbook.pages import (
    TIMESTAMPTZ,
    UUID,
    PageQuery,
    decode_cursor,
    page_of,
    page_response,
    split_page,
)

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()

BOOKING_COLUMNS = (
    "id, event_id, user_id, quantity, status, confirmation_status, confirmed_at, created_at"
)
IDEMPOTENCY_KEY = "Idempotency-Key"
# Printable ASCII: the key is stored and compared as is, and may be logged.
_SANE_KEY = re.compile(r"[\x20-\x7e]{1,255}")


class BookingSchema(Schema):
    id = fields.UUID(required=True)
    event_id = fields.UUID(required=True)
    user_id = fields.UUID(required=True)
    quantity = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(("confirmed", "cancelled")))
    confirmation_status = fields.String(
        required=True, validate=validate.OneOf(("pending", "sent", "failed"))
    )
    confirmed_at = fields.AwareDateTime(
        required=True, allow_none=True,
        metadata={"description": "When the confirmation mail was sent."},
    )
    created_at = fields.AwareDateTime(required=True)


class NewBookingSchema(Schema):
    quantity = fields.Integer(
        strict=True, load_default=1, validate=validate.Range(1, 100),
        metadata={"description": "Tickets, at most the event's max_tickets_per_booking."},
    )


BOOKING = BookingSchema()
BOOKING_PAGE = page_of(BookingSchema)


# Booking outcomes as the bookings counter labels them.
METRIC_OUTCOMES = {
    "created": "created",
    "sold_out": "sold_out",
    "event_not_bookable": "not_bookable",
    "customer_limit_reached": "customer_limit",
    "replayed": "replayed",
}


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


def fingerprint(event: uuid.UUID, quantity: int) -> str:
    """What a retry must repeat to count as the same request."""
    return hashlib.sha256(f"{event}:{quantity}".encode()).hexdigest()


def account_gone() -> Problem:
    return Problem(
        401, "invalid_token", "The account no longer exists.",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


@routes.post("/api/v1/events/{id}/bookings")
@endpoint(
    "Book tickets",
    roles=CUSTOMER,
    body=NewBookingSchema(),
    response=BOOKING,
    status=201,
    headers=(IDEMPOTENCY_KEY,),
    problems={
        404: ["event_not_found"],
        409: ["sold_out", "event_not_bookable", "customer_limit_reached"],
        422: ["validation_failed", "idempotency_key_reused"],
        429: ["too_many_requests"],
    },
    tag="bookings",
    description=(
        "Takes the tickets at once, or answers 409 `sold_out` with `available_tickets`. "
        "When the event has a `max_tickets_per_customer`, the customer's confirmed bookings "
        "of it and this one together must not exceed it: 409 `customer_limit_reached` with "
        "`customer_tickets_left`. "
        "With an `Idempotency-Key` header (1..255 printable ASCII characters), a retry by the "
        "same customer with the same key and body, at once or concurrently, makes no second "
        "booking: the first answer is 201, every replay 200 with the same booking. The same "
        "key with another event or quantity is 422 `idempotency_key_reused`. Keys are kept "
        "as long as the booking."
    ),
)
async def book(request: web.Request, body: dict[str, Any]) -> web.Response:
    user = principal(request)
    event = event_id(request)
    key = idempotency_key(request)
    config = request.app[CONFIG]
    if config.booking_rate > 0:
        await request.app[RATE_LIMITER].enforce(
            "booking", str(user.id), config.booking_rate, 1,
            "Too many bookings; wait a second and try again.",
        )
    quantity = body["quantity"]
    # Bookings of one event that arrive together are decided in one call (see
    # eventbook.booking_batcher); this request still gets its own decision.
    try:
        decided = await request.app[BOOKING_BATCHER].book(
            event,
            BookingRequest(user.id, quantity, key, fingerprint(event, quantity),
                           request[REQUEST_ID]),
        )
    except asyncpg.ForeignKeyViolationError:
        raise account_gone() from None
    outcome = decided.outcome
    if outcome in METRIC_OUTCOMES:
        request.app[METRICS].booking_outcome(METRIC_OUTCOMES[outcome])
    if outcome == "created":
        booking = decided.booking
        assert booking is not None
        log.info(
            "booking_created", booking_id=str(booking["id"]), event_id=str(event),
            quantity=quantity, available=decided.available,
        )
        return json_response(BOOKING.dump(booking), status=201)
    if outcome == "replayed":
        return json_response(BOOKING.dump(decided.booking), status=200)
    if outcome == "key_reused":
        raise Problem(
            422, "idempotency_key_reused",
            "This Idempotency-Key was used for a different booking request.",
        )
    if outcome == "event_not_found":
        raise event_not_found()
    if outcome == "event_not_bookable":
        raise Problem(
            409, "event_not_bookable", "The event is cancelled or has already started."
        )
    if outcome == "too_many_tickets":
        raise validation_problem(
            {"quantity": [f"At most {decided.available} tickets per booking for this event."]}
        )
    if outcome == "customer_limit_reached":
        left = decided.available
        raise Problem(
            409, "customer_limit_reached",
            "You hold as many tickets as one customer may for this event." if not left
            else f"You may book only {left} more ticket{'s' if left != 1 else ''} "
                 "for this event.",
            customer_tickets_left=left,
        )
    assert outcome == "sold_out", outcome
    raise Problem(
        409, "sold_out",
        "No tickets are left." if not decided.available
        else f"Only {decided.available} ticket{'s are' if decided.available != 1 else ' is'} left.",
        available_tickets=decided.available,
    )


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
    limit = query["limit"]
    args: list[Any] = [principal(request).id, limit + 1]
    before = ""
    if query["cursor"] is not None:
        args.extend(decode_cursor(query["cursor"], TIMESTAMPTZ, UUID))
        before = "AND (created_at, id) < ($3, $4)"
    rows = await request.app[POOL].fetch(
        f"SELECT {BOOKING_COLUMNS} FROM bookings WHERE user_id = $1 {before}"
        f" ORDER BY created_at DESC, id DESC LIMIT $2",
        *args,
    )
    page, next_cursor = split_page(rows, limit, lambda row: (row["created_at"], row["id"]))
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
    row = await request.app[POOL].fetchrow(
        "SELECT b.id, b.event_id, b.user_id, b.quantity, b.status, b.confirmation_status,"
        " b.confirmed_at, b.created_at, e.organizer_id"
        " FROM bookings b JOIN events e ON e.id = b.event_id WHERE b.id = $1",
        booking_id(request),
    )
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
        "SELECT outcome, booking FROM cancel_booking($1, $2, $3)",
        booking, principal(request).id, request[REQUEST_ID],
    )
    assert row is not None
    if row["outcome"] == "booking_not_found":
        raise booking_not_found()
    if row["outcome"] == "already_cancelled":
        raise Problem(409, "booking_already_cancelled", "The booking is already cancelled.")
    if row["outcome"] == "event_started":
        raise Problem(
            409, "event_started", "The event has started; its bookings can no longer be cancelled."
        )
    assert row["outcome"] == "cancelled", row["outcome"]
    log.info("booking_cancelled", booking_id=str(booking))
    return json_response(BOOKING.dump(row["booking"]))
