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

Confirmations of holds go together the same way, in calls of their own to confirm_holds
(sql/functions/confirm_holds.sql): each writes an outbox row, and PostgreSQL commits the
transactions that do (they NOTIFY the relay) one at a time, so one confirmation per
commit would cap them near 1 / WAL flush over every event together.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

import asyncpg
import structlog
from aiohttp import web

from eventbook import db
from eventbook.coalescer import Coalescer, fail
from eventbook.keys import BOOKING_BATCHER, CONFIG, POOL

log = structlog.get_logger(__name__)

BOOK = db.query("book_tickets")
CONFIRM = db.query("confirm_holds")

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


@dataclasses.dataclass(frozen=True, slots=True)
class Confirmation:
    """One customer's confirmation of a hold, validated by the handler."""

    hold: uuid.UUID
    user: uuid.UUID
    payment_reference: str | None
    request_id: str


Waiting = tuple[uuid.UUID, BookingRequest, "asyncio.Future[Booked]"]
# A confirmation and its answer: confirm_hold's row (outcome and booking).
Confirming = tuple[Confirmation, "asyncio.Future[asyncpg.Record]"]

Sent = TypeVar("Sent", Waiting, Confirming)


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
        self._confirmations = Coalescer(self._confirm, _future_of, max_batch)
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

    async def confirm(self, confirmation: Confirmation) -> asyncpg.Record:
        """confirm_hold's row for `confirmation` (outcome, and the booking), decided
        together with the confirmations waiting; raises as `book` does."""
        future: asyncio.Future[asyncpg.Record] = asyncio.get_running_loop().create_future()
        self._confirmations.submit((confirmation, future))
        try:
            async with asyncio.timeout(self.wait_timeout):
                return await asyncio.shield(future)
        except TimeoutError:
            self._confirmations.withdraw((confirmation, future))
            raise

    async def close(self) -> None:
        """Wait for the calls in flight, the requests queued behind them and those of a
        refused batch still being decided alone."""
        while (self._requests.sending is not None or self._confirmations.sending is not None
               or self._alone):
            await asyncio.gather(
                *filter(None, [self._requests.sending, self._confirmations.sending]),
                *self._alone, return_exceptions=True,
            )

    async def _decide(self, batch: list[Waiting]) -> None:
        await self._send(batch, BOOK, self._arguments, Booked.from_row)

    async def _confirm(self, batch: list[Confirming]) -> None:
        await self._send(batch, CONFIRM, _confirm_arguments, _record)

    async def _send(
        self, batch: list[Sent], query: str, arguments: Callable[[list[Sent]], list[Any]],
        answer: Callable[[asyncpg.Record], Any],
    ) -> None:
        """One call of `query` for `batch` (its arguments, then the lock bound), each
        request answered with `answer(row)`."""
        self.calls += 1
        try:
            try:
                rows = await self.pool.fetch(query, *arguments(batch), BATCH_LOCK_TIMEOUT)
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
                    task = asyncio.create_task(
                        self._send_alone(waiting, query, arguments, answer)
                    )
                    self._alone.add(task)
                    task.add_done_callback(self._alone.discard)
                return
        except asyncio.CancelledError as exc:
            fail((_future_of(waiting) for waiting in batch), exc)
            raise
        except Exception as exc:
            # The connection failed (or timed out) with the call sent: it may have
            # committed, so deciding again could book twice. Each request fails as a lone
            # booking would (503); a client retries safely with an Idempotency-Key.
            log.warning("booking_batch_lost", size=len(batch), error=repr(exc))
            fail((_future_of(waiting) for waiting in batch), exc)
            return
        for waiting, row in zip(batch, rows, strict=True):
            future = _future_of(waiting)
            if not future.done():
                future.set_result(answer(row))

    async def _send_alone(
        self, waiting: Sent, query: str, arguments: Callable[[list[Sent]], list[Any]],
        answer: Callable[[asyncpg.Record], Any],
    ) -> None:
        future = _future_of(waiting)
        try:
            async with self._alone_slots:
                # A batch of one, with no bound on the wait for its event's lock.
                row = await self.pool.fetchrow(query, *arguments([waiting]), None)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        assert row is not None
        if not future.done():
            future.set_result(answer(row))


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


def _confirm_arguments(batch: list[Confirming]) -> list[Any]:
    """confirm_holds' arguments but the lock bound."""
    confirmations = [confirmation for confirmation, _ in batch]
    return [[c.hold for c in confirmations], [c.user for c in confirmations],
            [c.payment_reference for c in confirmations],
            [c.request_id for c in confirmations]]


def _record(row: asyncpg.Record) -> asyncpg.Record:
    return row


def _future_of(waiting: Waiting | Confirming) -> asyncio.Future[Any]:
    return waiting[-1]


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
