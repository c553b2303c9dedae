"""Events: publish, browse, change, cancel, and the attendee list."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import asyncpg
import structlog
from aiohttp import web
from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from eventbook import db
from eventbook.auth import account_gone, bearer_user, ensure_event_owner, principal
from eventbook.endpoints import ORGANIZER, PUBLIC, endpoint, json_response, path_uuid
from eventbook.errors import Outcome, Problem, validation_problem
from eventbook.fields import DEFAULT_CURRENCY, Currency, Line, Moment, Prose, Text
from eventbook.keys import CONFIG, POOL, RATE_LIMITER, READS, REQUEST_ID
from eventbook.pages import (
    TIMESTAMPTZ,
    UUID,
    PageQuery,
    decode_cursor,
    fetch_page,
    page_of,
    page_response,
    split_page,
)
from eventbook.representations import EVENT, EventSchema, ItemSchema

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()

EVENT_ORGANIZER = db.query("event_organizer")
CREATE_EVENT = db.query("event_create")
EVENT_BY_ID = db.query("event_by_id")
UPDATE_EVENT = db.query("update_event")
CANCEL_EVENT = db.query("cancel_event")
ATTENDEES = db.query("attendees")
ATTENDEES_AFTER = db.query("attendees_after")
# The browse and search queries are built per request (see list_events); they return
# these columns, those of event_by_id.
EVENT_COLUMNS = (
    "id, organizer_id, title, description, venue, starts_at, ends_at, capacity,"
    " available_tickets, max_tickets_per_booking, max_tickets_per_customer, status, version,"
    " created_at, updated_at, currency"
)
DEFAULT_PER_BOOKING = 10
# Word characters without the underscore, which PostgreSQL's parser splits words at.
WORD = re.compile(r"[^\W_]+")
# Each word is a prefix the search index expands to every word it begins and merges:
# more words cost more, and so do shorter ones, which begin more words.
MAX_SEARCH_WORDS = 4
MIN_SEARCH_WORD = 2


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("Must not be blank.")


def _in_future(value: dt.datetime) -> None:
    if value <= dt.datetime.now(dt.UTC):
        raise ValidationError("Must be in the future.")


class EventChangesSchema(Schema):
    """PATCH: any of the fields an organizer sets; null clears description, venue, ends_at."""

    title = Line(validate=[validate.Length(1, 200), _not_blank])
    description = Prose(allow_none=True, validate=validate.Length(max=10_000))
    venue = Line(allow_none=True, validate=validate.Length(max=200))
    starts_at = Moment(validate=_in_future)
    ends_at = Moment(allow_none=True)
    capacity = fields.Integer(strict=True, validate=validate.Range(1, 1_000_000))
    max_tickets_per_booking = fields.Integer(strict=True, validate=validate.Range(1, 100))
    max_tickets_per_customer = fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(1, 1_000_000),
        metadata={"description": "null removes the limit. At least max_tickets_per_booking. "
                                 "Lowering it takes no tickets away; it refuses further "
                                 "bookings of customers who hold as many."},
    )

    @validates_schema
    def _consistent(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            raise ValidationError("Send at least one field to change.")
        starts_at, ends_at = data.get("starts_at"), data.get("ends_at")
        if starts_at is not None and ends_at is not None and ends_at <= starts_at:
            raise ValidationError("Must be after starts_at.", "ends_at")
        per_booking = data.get("max_tickets_per_booking")
        per_customer = data.get("max_tickets_per_customer")
        if per_booking is not None and per_customer is not None and per_customer < per_booking:
            raise ValidationError(
                f"Must be at least max_tickets_per_booking ({per_booking}).",
                "max_tickets_per_customer",
            )


class NewEventSchema(EventChangesSchema):
    title = Line(required=True, validate=[validate.Length(1, 200), _not_blank])
    description = Prose(
        allow_none=True, load_default="", validate=validate.Length(max=10_000)
    )
    venue = Line(allow_none=True, load_default=None, validate=validate.Length(max=200))
    starts_at = Moment(required=True, validate=_in_future)
    ends_at = Moment(allow_none=True, load_default=None)
    capacity = fields.Integer(
        required=True, strict=True, validate=validate.Range(1, 1_000_000)
    )
    max_tickets_per_booking = fields.Integer(
        strict=True, validate=validate.Range(1, 100),
        metadata={"description": f"Default {DEFAULT_PER_BOOKING}, or "
                                 "max_tickets_per_customer when that is lower."},
    )
    max_tickets_per_customer = fields.Integer(
        strict=True, allow_none=True, load_default=None, validate=validate.Range(1, 1_000_000),
        metadata={"description": "Most tickets one customer may hold in confirmed bookings "
                                 "(cancelled ones do not count); null or absent: no limit. "
                                 "At least max_tickets_per_booking."},
    )

    currency = Currency(
        load_default=DEFAULT_CURRENCY,
        metadata={"description": f"ISO 4217 code of the event's prices (default "
                                 f"{DEFAULT_CURRENCY})."},
    )

    @post_load
    def _default_per_booking(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if "max_tickets_per_booking" not in data:
            cap = data["max_tickets_per_customer"]
            data["max_tickets_per_booking"] = min(DEFAULT_PER_BOOKING, cap or DEFAULT_PER_BOOKING)
        return data


class EventListQuery(PageQuery):
    q = Text(
        validate=validate.Length(1, 200),
        metadata={
            "description": f"1 to {MAX_SEARCH_WORDS} words of at least {MIN_SEARCH_WORD} "
                           "letters or digits that title or description contain, each as a "
                           "prefix (case-insensitive); every word must match."
        },
    )
    starts_after = Moment(
        metadata={"description": "Only events starting after this time. Default: now."}
    )
    starts_before = Moment(metadata={"description": "Only events starting before this time."})
    organizer_id = fields.UUID()
    available = fields.Boolean(
        metadata={"description": "true: only events with tickets left. false: no filter."}
    )


class AttendeeSchema(Schema):
    booking_id = fields.UUID(required=True)
    user_id = fields.UUID(required=True)
    name = fields.String(required=True)
    email = fields.String(required=True)
    quantity = fields.Integer(required=True)
    booked_at = fields.AwareDateTime(required=True)
    items = fields.List(
        fields.Nested(ItemSchema), required=True,
        metadata={"description": "The ticket types booked, with how many of each."},
    )


ATTENDEE = AttendeeSchema()
EVENT_PAGE = page_of(EventSchema)
ATTENDEE_PAGE = page_of(AttendeeSchema)


def event_id(request: web.Request) -> uuid.UUID:
    return path_uuid(request, "id", "event_not_found", "There is no such event.")


def event_not_found() -> Problem:
    return Problem(404, "event_not_found", "There is no such event.")


def event_cancelled() -> Problem:
    return Problem(409, "event_cancelled", "The event is cancelled; it cannot change.")


def event_ended() -> Problem:
    return Problem(409, "event_ended", "The event is over; it cannot change any more.")


def search_query(text: str) -> str:
    """A tsquery matching every word of `text` as a prefix: `rock:* & fest:*`.

    Built from the words alone, so no tsquery operator a client types reaches PostgreSQL.
    """
    words = WORD.findall(text)
    if not words:
        raise validation_problem({"q": ["Give at least one word to search for."]})
    if len(words) > MAX_SEARCH_WORDS:
        raise validation_problem(
            {"q": [f"Search for at most {MAX_SEARCH_WORDS} words; this has {len(words)}."]}
        )
    short = [word for word in words if len(word) < MIN_SEARCH_WORD]
    if short:
        raise validation_problem(
            {"q": [f"Each word needs at least {MIN_SEARCH_WORD} letters or digits; "
                   f"{short[0]!r} has fewer."]}
        )
    return " & ".join(f"{word}:*" for word in words)


async def search(
    request: web.Request, pool: asyncpg.Pool, sql: str, args: list[Any]
) -> list[asyncpg.Record]:
    """Run an event search on search connections (connections.create_search_pool): 503
    `search_busy` when every one stays taken for the search timeout, 422
    `search_too_broad` when PostgreSQL stops the search at that timeout."""
    seconds = request.app[CONFIG].search_timeout_ms / 1000
    try:
        conn = await pool.acquire(timeout=seconds)
    except TimeoutError:
        raise Problem(
            503, "search_busy", "Too many searches are running; try again in a moment.",
            headers={"Retry-After": "1"},
        ) from None
    try:
        rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
    except asyncpg.QueryCanceledError:
        log.info("search_too_broad", timeout_ms=request.app[CONFIG].search_timeout_ms)
        message = ("The search took too long: its words begin too many words of too many "
                   "events. Search with longer words.")
        raise Problem(422, "search_too_broad", message, errors={"q": [message]}) from None
    finally:
        await pool.release(conn)
    return rows


async def limit_browsing(request: web.Request) -> None:
    """429 past EVENTBOOK_BROWSE_RATE reads of events a second: per user when the request
    carries a valid token, else per client address."""
    config = request.app[CONFIG]
    if config.browse_rate == 0:
        return
    user = bearer_user(request)
    subject = f"user:{user.id}" if user is not None else f"address:{request.remote or '-'}"
    await request.app[RATE_LIMITER].enforce(
        "browse", subject, config.browse_rate, 1,
        "Too many requests for events; wait a second and try again.",
    )


# The description of the routes that may read a replica.
REPLICA_NOTE = (
    " With a read replica configured, the answer may come from it and then lag the "
    "primary by up to the server's maximum replica lag (`available_tickets` too; a "
    "booking is always decided on the primary): `X-Read-Source` says `replica` or "
    "`primary`, and `X-Read-Lag-Seconds` bounds a replica answer's age. An organizer "
    "signed in and reading their own events always reads the primary."
)


async def owned_event(request: web.Request) -> uuid.UUID:
    """The path's event id, after checking the caller organizes it (404, 403)."""
    event = event_id(request)
    organizer = await request.app[POOL].fetchval(EVENT_ORGANIZER, event)
    if organizer is None:
        raise event_not_found()
    ensure_event_owner(principal(request), organizer)
    return event


def as_json(changes: dict[str, Any]) -> dict[str, Any]:
    """A change as the stored procedures take it (jsonb): times in ISO 8601."""
    return {
        name: value.isoformat() if isinstance(value, dt.datetime) else value
        for name, value in changes.items()
    }


@routes.post("/api/v1/events")
@endpoint(
    "Publish an event",
    roles=ORGANIZER,
    body=NewEventSchema(),
    response=EVENT,
    status=201,
    tag="events",
)
async def create_event(request: web.Request, body: dict[str, Any]) -> web.Response:
    user = principal(request)
    try:
        event = await request.app[POOL].fetchrow(
            CREATE_EVENT, user.id, body["title"], body["description"] or "", body["venue"],
            body["starts_at"], body["ends_at"], body["capacity"],
            body["max_tickets_per_booking"], body["max_tickets_per_customer"], body["currency"],
        )
    except asyncpg.ForeignKeyViolationError:
        raise account_gone() from None
    assert event is not None
    log.info("event_created", event_id=str(event["id"]), capacity=event["capacity"])
    return json_response(EVENT.dump(event), status=201)


@routes.get("/api/v1/events")
@endpoint(
    "Browse scheduled events, soonest first",
    roles=PUBLIC,
    query=EventListQuery(),
    response=EVENT_PAGE,
    problems={
        422: ["validation_failed", "search_too_broad"],
        429: ["too_many_requests"],
        503: ["search_busy"],
    },
    tag="events",
    description=(
        "Lists scheduled events (never cancelled ones) ordered by `starts_at`, then `id`. "
        "Without `starts_after` only events that have not started yet are listed; give "
        "`starts_after` to choose the window's start yourself (past events included). "
        "`q` matches words that begin the words of the title or description, "
        "case-insensitively; all words must match. Pages are stable: events added between "
        "requests never make an event repeat or go missing. A search that runs longer than "
        "the server's search timeout is stopped: 422 `search_too_broad` (search with "
        "longer words); when every search slot stays taken that long: 503 `search_busy`. "
        "Reads of events are limited per client address, or per user with a token: 429."
        + REPLICA_NOTE
    ),
)
async def list_events(request: web.Request, query: dict[str, Any]) -> web.Response:
    await limit_browsing(request)
    # Dynamic SQL, the one place it is: only the filters given become SQL conditions (each
    # value a $n parameter), because a fixed `$n IS NULL OR ...` query would get a generic
    # plan that cannot use the search or organizer index.
    conditions = ["status = 'scheduled'"]
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    starts_after = query.get("starts_after")
    if starts_after is None:
        conditions.append("starts_at > now()")
    else:
        conditions.append(f"starts_at > {arg(starts_after)}")
    if "starts_before" in query:
        conditions.append(f"starts_at < {arg(query['starts_before'])}")
    if "organizer_id" in query:
        conditions.append(f"organizer_id = {arg(query['organizer_id'])}")
    if query.get("available"):
        conditions.append("available_tickets > 0")
    if "q" in query:
        # The same expression as the events_search GIN index, so the index serves it.
        conditions.append(
            "to_tsvector('simple', title || ' ' || description)"
            f" @@ to_tsquery('simple', {arg(search_query(query['q']))})"
        )
    if query["cursor"] is not None:
        after_starts, after_id = decode_cursor(query["cursor"], TIMESTAMPTZ, UUID)
        conditions.append(f"(starts_at, id) > ({arg(after_starts)}, {arg(after_id)})")
    limit = query["limit"]
    where = " AND ".join(conditions)
    user = bearer_user(request)
    owner = "owner" if user is not None and query.get("organizer_id") == user.id else None
    if "q" in query:
        # Find the matches through the search index first, then order them. Left to
        # itself the planner walks events_browse in order and tests every event against
        # the words (it cannot estimate prefix matches), which costs the whole table
        # when few or none match. This way the cost follows the number of matches.
        sql = (
            f"WITH found AS MATERIALIZED (SELECT starts_at, id FROM events WHERE {where})"
            f" SELECT {EVENT_COLUMNS} FROM events WHERE id IN"
            f" (SELECT id FROM found ORDER BY starts_at, id LIMIT {arg(limit + 1)})"
            f" ORDER BY starts_at, id"
        )
        read = await request.app[READS].read(
            lambda pool: search(request, pool, sql, args), search=True,
            primary_because=owner,
        )
    else:
        sql = (
            f"SELECT {EVENT_COLUMNS} FROM events WHERE {where}"
            f" ORDER BY starts_at, id LIMIT {arg(limit + 1)}"
        )
        read = await request.app[READS].read(
            lambda pool: pool.fetch(sql, *args), primary_because=owner
        )
    page, next_cursor = split_page(read.value, limit, lambda row: (row["starts_at"], row["id"]))
    return json_response(
        page_response(EVENT.dump(page, many=True), next_cursor), headers=read.headers()
    )


@routes.get("/api/v1/events/{id}")
@endpoint(
    "One event",
    roles=PUBLIC,
    response=EVENT,
    problems={404: ["event_not_found"], 429: ["too_many_requests"]},
    tag="events",
    description=(
        "Cancelled events are shown too, with `status: cancelled`. Reads of events are "
        "limited per client address, or per user with a token: 429." + REPLICA_NOTE
        + " An event the replica does not have yet is looked for on the primary before "
        "the answer is 404, so a new event is never missing here."
    ),
)
async def get_event(request: web.Request) -> web.Response:
    await limit_browsing(request)
    event = event_id(request)
    user = bearer_user(request)

    def recheck(row: asyncpg.Record | None) -> str | None:
        if row is None:
            return "missing"
        if user is not None and row["organizer_id"] == user.id:
            return "owner"
        return None

    read = await request.app[READS].read(
        lambda pool: pool.fetchrow(EVENT_BY_ID, event), recheck=recheck
    )
    if read.value is None:
        raise event_not_found()
    return json_response(EVENT.dump(read.value), headers=read.headers())


@routes.patch("/api/v1/events/{id}")
@endpoint(
    "Change an event",
    roles=ORGANIZER,
    body=EventChangesSchema(),
    response=EVENT,
    problems={
        403: ["not_event_owner"],
        404: ["event_not_found"],
        409: ["capacity_below_sold", "event_cancelled", "event_ended"],
    },
    tag="events",
    description=(
        "Partial: only the fields sent change; null clears `description`, `venue`, "
        "`ends_at` or `max_tickets_per_customer`. `version` goes up by one. Capacity never "
        "goes below the tickets sold and held (409 `capacity_below_sold`, with `sold`); the "
        "tickets left follow it. A change of title, venue, `starts_at` or `ends_at` notifies every "
        "attendee. An event that has ended (at `ends_at`, or at `starts_at` when it has no "
        "end) cannot change: 409 `event_ended`."
    ),
)
async def update_event(request: web.Request, body: dict[str, Any]) -> web.Response:
    event = await owned_event(request)
    row = await request.app[POOL].fetchrow(
        UPDATE_EVENT, event, as_json(body), request[REQUEST_ID]
    )
    assert row is not None
    UPDATE_OUTCOMES[row["outcome"]].check(row, body)
    log.info("event_updated", event_id=str(event), fields=sorted(body))
    return json_response(EVENT.dump(row["event"]))


def _cap_below_booking_max(
    changes: dict[str, Any], event: asyncpg.Record
) -> dict[str, list[str]]:
    """The 422 errors of a change that left max_tickets_per_customer below
    max_tickets_per_booking, on the field the change sent."""
    if "max_tickets_per_customer" in changes:
        per_booking = changes.get("max_tickets_per_booking", event["max_tickets_per_booking"])
        return {"max_tickets_per_customer": [
            f"Must be at least max_tickets_per_booking ({per_booking}); lower that in the "
            "same change."
        ]}
    return {"max_tickets_per_booking": [
        f"Must be at most max_tickets_per_customer ({event['max_tickets_per_customer']})."
    ]}


# Every outcome of update_event; a refusal is built from its row and the change sent.
UPDATE_OUTCOMES: dict[str, Outcome] = {
    "updated": Outcome(200),
    "event_not_found": Outcome(refusal=lambda row, changes: event_not_found()),
    "event_cancelled": Outcome(refusal=lambda row, changes: event_cancelled()),
    "event_ended": Outcome(refusal=lambda row, changes: event_ended()),
    "capacity_below_sold": Outcome(refusal=lambda row, changes: Problem(
        409, "capacity_below_sold",
        f"{row['sold']} tickets are sold or held; capacity cannot go below that.",
        sold=row["sold"],
    )),
    "ends_before_start": Outcome(refusal=lambda row, changes: validation_problem(
        {"ends_at": ["Must be after starts_at."]}
    )),
    "customer_cap_below_booking_max": Outcome(refusal=lambda row, changes: validation_problem(
        _cap_below_booking_max(changes, row["event"])
    )),
}

# Every outcome of cancel_event.
CANCEL_OUTCOMES: dict[str, Outcome] = {
    "cancelled": Outcome(200),
    "event_not_found": Outcome(refusal=event_not_found),
    "event_cancelled": Outcome(refusal=lambda: Problem(
        409, "event_cancelled", "The event is already cancelled."
    )),
    "event_ended": Outcome(refusal=event_ended),
}


@routes.post("/api/v1/events/{id}/cancel")
@endpoint(
    "Cancel an event",
    roles=ORGANIZER,
    response=EVENT,
    problems={
        403: ["not_event_owner"],
        404: ["event_not_found"],
        409: ["event_cancelled", "event_ended"],
    },
    tag="events",
    description=(
        "Cancels every booking of the event and notifies every attendee. An event that has "
        "ended (at `ends_at`, or at `starts_at` when it has no end) cannot be cancelled: "
        "409 `event_ended`."
    ),
)
async def cancel_event(request: web.Request) -> web.Response:
    event = await owned_event(request)
    row = await request.app[POOL].fetchrow(CANCEL_EVENT, event, request[REQUEST_ID])
    assert row is not None
    CANCEL_OUTCOMES[row["outcome"]].check()
    log.info("event_cancelled", event_id=str(event))
    return json_response(EVENT.dump(row["event"]))


@routes.get("/api/v1/events/{id}/attendees")
@endpoint(
    "Who booked an event",
    roles=ORGANIZER,
    query=PageQuery(),
    response=ATTENDEE_PAGE,
    problems={403: ["not_event_owner"], 404: ["event_not_found"]},
    tag="events",
    description="Confirmed bookings only, oldest first, one item per booking.",
)
async def list_attendees(request: web.Request, query: dict[str, Any]) -> web.Response:
    event = await owned_event(request)
    page, next_cursor = await fetch_page(
        request.app[POOL], ATTENDEES, ATTENDEES_AFTER, event, query,
        lambda row: (row["booked_at"], row["booking_id"]),
    )
    return json_response(page_response(ATTENDEE.dump(page, many=True), next_cursor))
