"""Checkout holds: tickets taken for a few minutes while the buyer pays, then confirmed
into a booking, released, or expired by the holds actor (eventbook.actors.holds).

A hold is decided by the same rule and the same batched call as a booking
(sql/functions/book_tickets.sql); it counts against the event, its ticket types and the
customer's cap until it ends."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from aiohttp import web
from marshmallow import Schema, validate

from eventbook import db
from eventbook.auth import principal
from eventbook.booking_batcher import Confirmation
from eventbook.bookings import (
    BOOK_OUTCOMES,
    IDEMPOTENCY_KEY,
    TAKE_PROBLEMS,
    NewBookingSchema,
    take,
)
from eventbook.endpoints import CUSTOMER, endpoint, json_response, path_uuid
from eventbook.errors import Outcome, Problem
from eventbook.fields import Text
from eventbook.keys import BOOKING_BATCHER, METRICS, POOL, REQUEST_ID
from eventbook.representations import BOOKING, HOLD

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()

HOLD_BY_ID = db.query("hold_by_id")
RELEASE_HOLD = db.query("release_hold")


class ConfirmSchema(Schema):
    payment_reference = Text(
        validate=validate.Length(1, 255), load_default=None,
        metadata={"description": "Recorded on the booking as given (payment is not taken)."},
    )




def hold_not_found() -> Problem:
    return Problem(404, "hold_not_found", "There is no such hold.")


def hold_id(request: web.Request) -> uuid.UUID:
    return path_uuid(request, "id", "hold_not_found", "There is no such hold.")


def _hold_expired() -> Problem:
    return Problem(409, "hold_expired", "The hold ran out; its tickets went back on sale.")


def _hold_released() -> Problem:
    return Problem(409, "hold_released", "The hold was released; its tickets went back on sale.")


# Every outcome of confirm_hold.
CONFIRM_OUTCOMES: dict[str, Outcome] = {
    "confirmed": Outcome(201),
    "replayed": Outcome(200),
    "hold_not_found": Outcome(refusal=hold_not_found),
    "hold_expired": Outcome(refusal=_hold_expired),
    "hold_released": Outcome(refusal=_hold_released),
    "hold_already_confirmed": Outcome(refusal=lambda: Problem(
        409, "hold_already_confirmed",
        "The hold was already confirmed with another payment reference.",
    )),
    "event_not_bookable": Outcome(refusal=lambda: Problem(
        409, "event_not_bookable", "The event is cancelled or has already started."
    )),
}

# Every outcome of release_hold: a hold no longer taking tickets is released already.
RELEASE_OUTCOMES: dict[str, Outcome] = {
    "released": Outcome(204),
    "hold_expired": Outcome(204),
    "hold_released": Outcome(204),
    "hold_not_found": Outcome(refusal=hold_not_found),
    "hold_confirmed": Outcome(refusal=lambda: Problem(
        409, "hold_confirmed",
        "The hold was confirmed into a booking; cancel the booking instead.",
    )),
}


@routes.post("/api/v1/events/{id}/holds")
@endpoint(
    "Hold tickets while paying",
    roles=CUSTOMER,
    body=NewBookingSchema(),
    response=HOLD,
    status=201,
    headers=(IDEMPOTENCY_KEY,),
    problems=TAKE_PROBLEMS,
    tag="holds",
    description=(
        "Takes the tickets at once by the same rules as a booking (body, problems, caps and "
        "Idempotency-Key alike) and keeps them until `expires_at` (EVENTBOOK_HOLD_SECONDS "
        "after now). Confirm it to book them; released or expired, they are bookable again "
        "at once. The price of each item is frozen when the hold is taken."
    ),
)
async def hold(request: web.Request, body: dict[str, Any]) -> web.Response:
    decided = await take(request, body, hold=True)
    held = decided.booking
    assert held is not None
    if decided.outcome == "created":
        request.app[METRICS].hold_event("created")
        log.info(
            "hold_created", hold_id=str(held["id"]), event_id=str(held["event_id"]),
            quantity=held["quantity"], expires_at=held["expires_at"].isoformat(),
        )
    return json_response(HOLD.dump(held), status=BOOK_OUTCOMES[decided.outcome].status)


@routes.get("/api/v1/holds/{id}")
@endpoint(
    "One of my holds",
    roles=CUSTOMER,
    response=HOLD,
    problems={404: ["hold_not_found"]},
    tag="holds",
    description="For its customer; anyone else gets 404.",
)
async def get_hold(request: web.Request) -> web.Response:
    row = await request.app[POOL].fetchrow(HOLD_BY_ID, hold_id(request), principal(request).id)
    if row is None:
        raise hold_not_found()
    return json_response(HOLD.dump(row))


@routes.post("/api/v1/holds/{id}/confirm")
@endpoint(
    "Confirm my hold into a booking",
    roles=CUSTOMER,
    body=ConfirmSchema(),
    response=BOOKING,
    status=201,
    replay="Confirmed already: the same booking again.",
    problems={
        404: ["hold_not_found"],
        409: ["hold_expired", "hold_released", "hold_already_confirmed", "event_not_bookable"],
        422: ["validation_failed"],
    },
    tag="holds",
    description=(
        "Books the held tickets at the hold's prices, and queues the confirmation mail. "
        "Confirming again returns the same booking with 200; with a different "
        "`payment_reference` it is 409 `hold_already_confirmed`. After `expires_at` it is "
        "409 `hold_expired`, even if its tickets have not gone back yet: a confirmation "
        "racing the expiry has one winner."
    ),
)
async def confirm_hold(request: web.Request, body: dict[str, Any]) -> web.Response:
    held = hold_id(request)
    # Confirmations that arrive together share one call and one commit, as bookings do.
    row = await request.app[BOOKING_BATCHER].confirm(Confirmation(
        held, principal(request).id, body["payment_reference"], request[REQUEST_ID]
    ))
    outcome = CONFIRM_OUTCOMES[row["outcome"]]
    outcome.check()
    if row["outcome"] == "confirmed":
        request.app[METRICS].hold_event("confirmed")
        log.info("hold_confirmed", hold_id=str(held), booking_id=str(row["id"]))
    return json_response(BOOKING.dump(row), status=outcome.status)


@routes.delete("/api/v1/holds/{id}")
@endpoint(
    "Release my hold",
    roles=CUSTOMER,
    status=204,
    problems={404: ["hold_not_found"], 409: ["hold_confirmed"]},
    tag="holds",
    description=(
        "Its tickets are bookable again at once. A hold already released or expired "
        "answers 204 too; a confirmed one is 409 `hold_confirmed`."
    ),
)
async def release_hold(request: web.Request) -> web.Response:
    held = hold_id(request)
    outcome = await request.app[POOL].fetchval(RELEASE_HOLD, held, principal(request).id)
    RELEASE_OUTCOMES[outcome].check()
    if outcome == "released":
        request.app[METRICS].hold_event("released")
        log.info("hold_released", hold_id=str(held))
    return web.Response(status=204)
