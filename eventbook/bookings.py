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

from eventbook import db
from eventbook.auth import account_gone, can_read_booking, principal
from eventbook.booking_batcher import Booked, BookingRequest
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

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()

BOOKINGS_OF_USER = db.query("bookings_of_user")
BOOKINGS_OF_USER_AFTER = db.query("bookings_of_user_after")
BOOKING_WITH_ORGANIZER = db.query("booking_with_organizer")
CANCEL_BOOKING = db.query("cancel_booking")
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


def _sold_out(decided: Booked) -> Problem:
    left = decided.available
    return Problem(
        409, "sold_out",
        "No tickets are left." if not left
        else f"Only {left} ticket{'s are' if left != 1 else ' is'} left.",
        available_tickets=left,
    )


def _customer_limit_reached(decided: Booked) -> Problem:
    left = decided.allowed
    return Problem(
        409, "customer_limit_reached",
        "You hold as many tickets as one customer may for this event." if not left
        else f"You may book only {left} more ticket{'s' if left != 1 else ''} for this event.",
        customer_tickets_left=left,
    )


# Every outcome of book_tickets: the answer, and the label of the bookings counter.
BOOK_OUTCOMES: dict[str, Outcome] = {
    "created": Outcome(201, metric="created"),
    "replayed": Outcome(200, metric="replayed"),
    "key_reused": Outcome(refusal=lambda _: Problem(
        422, "idempotency_key_reused",
        "This Idempotency-Key was used for a different booking request.",
    )),
    "event_not_found": Outcome(refusal=lambda _: event_not_found()),
    "event_not_bookable": Outcome(metric="not_bookable", refusal=lambda _: Problem(
        409, "event_not_bookable", "The event is cancelled or has already started."
    )),
    "too_many_tickets": Outcome(refusal=lambda decided: validation_problem(
        {"quantity": [f"At most {decided.allowed} tickets per booking for this event."]}
    )),
    "customer_limit_reached": Outcome(metric="customer_limit", refusal=_customer_limit_reached),
    "sold_out": Outcome(metric="sold_out", refusal=_sold_out),
}

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
    outcome = BOOK_OUTCOMES[decided.outcome]
    if outcome.metric is not None:
        request.app[METRICS].booking_outcome(outcome.metric)
    outcome.check(decided)
    booking = decided.booking
    assert booking is not None
    if decided.outcome == "created":
        log.info(
            "booking_created", booking_id=str(booking["id"]), event_id=str(event),
            quantity=quantity, available=decided.available,
        )
    return json_response(BOOKING.dump(booking), status=outcome.status)


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
    return json_response(BOOKING.dump(row["booking"]))
