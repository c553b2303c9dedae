"""The holds actor: gives a hold's tickets back when it runs out, and makes the
waiting-list offers that wait on the clock.

It sleeps until the next live hold's expires_at (by the database's clock, looking again
at least every `poll_interval`, for holds taken meanwhile with a shorter life), then
expires every due hold in batches (sql/functions/expire_holds.sql). The holds are the
state, not a queue: nothing is lost when a worker dies, and the next pass of any worker
expires what was due. Several workers share the work: due holds are claimed with
FOR UPDATE SKIP LOCKED, and a hold ends only while it is live, so it expires once.

An expired hold's tickets go to the event's waiting list in the same transaction
(sql/functions/offer_waitlist.sql). Each pass also offers what a type kept for its
waiting list until its sales window opened, and returns what a type whose sales ended
kept (sql/functions/offer_due_waitlists.sql)."""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from eventbook import db
from eventbook.actors.stream import pause
from eventbook.metrics import Metrics
from eventbook.outages import Availability, is_outage, postgres_writable

log = structlog.get_logger(__name__)

EXPIRE_HOLDS = db.query("expire_holds")
OFFER_DUE_WAITLISTS = db.query("offer_due_waitlists")


class Holds:
    name = "holds"

    def __init__(
        self, pool: asyncpg.Pool, metrics: Metrics, *, batch_size: int = 1000,
        poll_interval: float = 1.0,
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.availability = Availability([lambda: postgres_writable(pool)])

    async def run(self, stopping: asyncio.Event) -> None:
        """Expire holds as they fall due until `stopping`; while PostgreSQL is down, wait
        for it (the holds wait with it) and carry on, without a restart."""
        while not stopping.is_set():
            try:
                wait = await self.expire_due()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                log.warning("holds_waiting_for_postgres", error=repr(exc))
                await self.availability.wait(stopping)
                continue
            await pause(wait, stopping)
        await self.availability.close()

    async def expire_due(self) -> float:
        """Expire every hold due now; return how long to sleep before looking again."""
        while True:
            row = await self.pool.fetchrow(EXPIRE_HOLDS, self.batch_size)
            assert row is not None
            if row["expired"]:
                self.metrics.hold_event("expired", row["expired"])
                log.info("holds_expired", count=row["expired"])
            if row["expired"] < self.batch_size:
                break
        offers = await self.pool.fetchval(OFFER_DUE_WAITLISTS, self.batch_size)
        if offers:
            log.info("waitlist_offers_due", count=offers)
        next_in: float | None = row["next_in_seconds"]
        if next_in is None:
            return self.poll_interval
        # A little past the expiry, so the hold is due when we look.
        return min(max(next_in, 0.0) + 0.005, self.poll_interval)
