"""Concurrent bookings coalesced into one stored-procedure call: the hot-event path.

Every booking locks its event's row until commit, so bookings of one event one at a
time are capped near 1 / commit latency, whatever the server. The batcher keeps one
call in flight; the requests that arrive meanwhile wait and go together in the next
call to book_tickets (sql/functions/book_tickets.sql), which locks each event of the
batch once, decides each request in arrival order against its own event's count, and
commits once. Like group
commit, this adds no delay at low load (a lone request is sent at once) and makes
batches as large as the load. Requests for different events share the call too: a
commit per booking was also most of the cost of bookings spread over many events.
Each request still gets its own outcome; the decision stays in SQL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from eventbook import db
from eventbook.coalescer import Coalescer, fail
from eventbook.keys import BOOKING_BATCHER, CONFIG, POOL

log = structlog.get_logger(__name__)

BOOK = db.query("book_tickets")

# How long a batch waits for an event's row lock before it is refused and its requests
# are decided alone (each then waits for its own event as long as a statement may).
BATCH_LOCK_TIMEOUT = "100ms"

# Bounds one transaction's work (and so the wait of the batch queued behind it).
MAX_BATCH = 256


# One line of a request: a ticket type (None: the event's only type) and how many.
Item = tuple[uuid.UUID | None, int]


@dataclasses.dataclass(frozen=True, slots=True)
class BookingRequest:
    """One customer's request for a booking or a hold, validated by the handler."""

    user: uuid.UUID
    items: tuple[Item, ...]
    key: str | None
    fingerprint: str
    request_id: str
    hold: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Booked:
    """The decision on one request, as book_tickets reports it."""

    outcome: str
    # The booking or hold made (created) or found by the Idempotency-Key (replayed,
    # key_reused), with its items.
    booking: Mapping[str, Any] | None
    # The tickets left: on the event (created, event_not_bookable, sold_out without a
    # ticket type), or of the ticket type (sold_out with one).
    available: int | None
    # too_many_tickets: the per-booking maximum of the ticket type, or of the event
    # without one; customer_limit_reached: the tickets the customer may still take.
    allowed: int | None
    # The ticket type an item's refusal is about.
    ticket_type: uuid.UUID | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Booked:
        booking = row if row["id"] is not None else None
        return cls(
            row["outcome"], booking, row["available"], row["allowed"], row["ticket_type_id"]
        )


Waiting = tuple[uuid.UUID, BookingRequest, "asyncio.Future[Booked]"]


class BookingBatcher:
    def __init__(
        self, pool: asyncpg.Pool, max_batch: int = MAX_BATCH, wait_timeout: float | None = None,
        hold_seconds: int = 600,
    ) -> None:
        self.pool = pool
        # How long a hold taken through this batcher lasts.
        self.hold_seconds = hold_seconds
        # How long a request waits for its decision. Against a database that hangs, the
        # call in flight ends only at the statement deadline; the requests queued behind
        # it would then wait for their own call's deadline too.
        self.wait_timeout = wait_timeout
        self._requests = Coalescer(self._decide, _future_of, max_batch)
        # Requests of a refused batch, being decided one by one. At most half the pool at
        # once, so requests stuck behind one locked event leave connections for the
        # batches of every other event.
        self._alone: set[asyncio.Task[None]] = set()
        self._alone_slots = asyncio.Semaphore(max(1, pool.get_max_size() // 2))
        # Calls made, for tests and the curious: requests / calls is the mean batch size.
        self.calls = 0

    async def book(self, event: uuid.UUID, request: BookingRequest) -> Booked:
        """Decide `request` on `event`, together with whatever else is waiting.

        Raises what deciding it alone would raise (e.g. asyncpg's ForeignKeyViolationError
        for a customer who no longer exists); a neighbour's failure is never ours.
        """
        future: asyncio.Future[Booked] = asyncio.get_running_loop().create_future()
        self._requests.submit((event, request, future))
        # The call goes on if this request is cancelled: like a lone booking whose client
        # hung up, it is decided (and answered to no one).
        try:
            async with asyncio.timeout(self.wait_timeout):
                return await asyncio.shield(future)
        except TimeoutError:
            # Not sent yet, so never decided: a 503 that tells the whole truth.
            self._requests.withdraw((event, request, future))
            raise

    async def close(self) -> None:
        """Wait for the call in flight, the requests queued behind it and those of a
        refused batch still being decided alone."""
        while self._requests.sending is not None or self._alone:
            await asyncio.gather(
                *filter(None, [self._requests.sending]), *self._alone, return_exceptions=True
            )

    async def _decide(self, batch: list[Waiting]) -> None:
        self.calls += 1
        try:
            try:
                rows = await self.pool.fetch(
                    BOOK, *self._arguments(batch), BATCH_LOCK_TIMEOUT
                )
            except asyncpg.PostgresConnectionError:
                raise
            except asyncpg.PostgresError as exc:
                # PostgreSQL refused the call, so nothing of it committed. One bad request
                # (a deleted customer, say) or one event locked long by someone else must
                # not fail or stall its neighbours: decide each alone; each waits only for
                # its own event's lock and gets its own answer.
                # Not awaited here: the next batch must not wait for a request stuck
                # behind one event's long-held lock.
                log.warning("booking_batch_failed", size=len(batch), error=repr(exc))
                for waiting in batch:
                    task = asyncio.create_task(self._decide_alone(*waiting))
                    self._alone.add(task)
                    task.add_done_callback(self._alone.discard)
                return
        except asyncio.CancelledError as exc:
            _fail(batch, exc)
            raise
        except Exception as exc:
            # The connection failed (or timed out) with the call sent: it may have
            # committed, so deciding again could book twice. Each request fails as a lone
            # booking would (503); a client retries safely with an Idempotency-Key.
            log.warning("booking_batch_lost", size=len(batch), error=repr(exc))
            _fail(batch, exc)
            return
        for (_, _, future), row in zip(batch, rows, strict=True):
            if not future.done():
                future.set_result(Booked.from_row(row))

    async def _decide_alone(
        self, event: uuid.UUID, request: BookingRequest, future: asyncio.Future[Booked]
    ) -> None:
        try:
            async with self._alone_slots:
                # A batch of one, with no bound on the wait for its event's lock.
                row = await self.pool.fetchrow(
                    BOOK, *self._arguments([(event, request, future)]), None
                )
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        assert row is not None
        if not future.done():
            future.set_result(Booked.from_row(row))


    def _arguments(self, batch: list[Waiting]) -> list[Any]:
        """book_tickets' arguments but the lock bound: the request arrays, then the items
        of every request in order, then how long a hold lasts."""
        requests = [request for _, request, _ in batch]
        items = [item for request in requests for item in request.items]
        return [
            [event for event, _, _ in batch], [r.user for r in requests],
            [r.hold for r in requests], [len(r.items) for r in requests],
            [r.key for r in requests], [r.fingerprint for r in requests],
            [r.request_id for r in requests],
            [ticket_type for ticket_type, _ in items], [quantity for _, quantity in items],
            self.hold_seconds,
        ]


def _future_of(waiting: Waiting) -> asyncio.Future[Booked]:
    return waiting[2]


def _fail(waiting: list[Waiting], exc: BaseException) -> None:
    fail((future for _, _, future in waiting), exc)


async def batcher_ctx(app: web.Application) -> AsyncIterator[None]:
    """The app's batcher; needs the pool, so it comes after pool_ctx in cleanup_ctx."""
    config = app[CONFIG]
    app[BOOKING_BATCHER] = BookingBatcher(
        app[POOL],
        wait_timeout=config.db_statement_timeout_seconds + config.db_acquire_timeout_seconds,
        hold_seconds=config.hold_seconds,
    )
    yield
    await app[BOOKING_BATCHER].close()
