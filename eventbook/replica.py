"""The read replica: which server answers a browsing read, and the guard on its lag.

With DATABASE_READ_URL set, reads of events (the list, the search, one event) go to a
streaming replica while it is at most EVENTBOOK_READ_MAX_LAG_SECONDS behind the primary;
everything else, and every read that decides or must see its own writes, stays on the
primary pool and never comes here.

How far behind the replica is, measured the same way whatever the replica is doing:
every `interval` the process reads the primary's flushed WAL position with the time it
asked, and the position the replica has replayed. Every transaction committed before a
sample's time is at or below its position, so once the replica has replayed past it, the
replica misses nothing older than that time: its lag is at most the age of the newest
sample it has replayed past. Unlike now() - pg_last_xact_replay_timestamp(), this stays
small on an idle primary (no commits to replay) and keeps growing while replay is paused
or the replica has lost its primary, where replay timestamps stop with nothing to tell.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

import asyncpg
import structlog

from eventbook import connections
from eventbook.config import Config
from eventbook.metrics import Metrics
from eventbook.outages import POSTGRES_ERRORS

log = structlog.get_logger(__name__)

T = TypeVar("T")

PRIMARY = "primary"
REPLICA = "replica"
# Bytes of WAL, as a number: pg_lsn values subtract to numeric.
PRIMARY_POSITION = "SELECT (pg_current_wal_flush_lsn() - '0/0')::bigint"
REPLICA_POSITION = (
    "SELECT pg_is_in_recovery() AS standby,"
    " (pg_last_wal_replay_lsn() - '0/0')::bigint AS replayed"
)
# A sample waits this long for each server; a replica that does not answer is down.
SAMPLE_TIMEOUT = 1.0
# Samples kept while the replica has replayed none of them: an hour at one a second.
MAX_SAMPLES = 3600


@dataclasses.dataclass(frozen=True)
class Read(Generic[T]):
    """What a read found, and where: `lag` bounds a replica's answer's staleness."""

    value: T
    source: str
    lag: float | None = None
    replica_configured: bool = False

    def headers(self) -> dict[str, str]:
        """X-Read-Source (primary or replica) and, from the replica, X-Read-Lag-Seconds:
        the answer is no older than that. None without a replica configured."""
        if not self.replica_configured:
            return {}
        headers = {"X-Read-Source": self.source}
        if self.lag is not None:
            headers["X-Read-Lag-Seconds"] = f"{self.lag:.3f}"
        return headers


def replica_failed(exc: BaseException) -> bool:
    """True when `exc` says the replica could not answer (down, starting, a query
    cancelled by replay's conflict with it), rather than that the read itself was
    wrong or ran too long, which the primary would answer no better."""
    return isinstance(exc, POSTGRES_ERRORS) and not isinstance(exc, asyncpg.QueryCanceledError)


class Reads:
    """Sends browsing reads to the replica while it is fresh enough, else to the primary.

    Without a replica every read goes to the primary pools; `watch` samples the lag."""

    def __init__(
        self, primary: asyncpg.Pool, primary_search: asyncpg.Pool, metrics: Metrics, *,
        replica: asyncpg.Pool | None = None, replica_search: asyncpg.Pool | None = None,
        max_lag: float = 5.0,
    ) -> None:
        self.primary = primary
        self.primary_search = primary_search
        self.replica = replica
        self.replica_search = replica_search
        self.metrics = metrics
        self.max_lag = max_lag
        # Often enough that the lag measured overshoots the real one by a fifth at most.
        self.interval = min(1.0, max_lag / 5)
        # (WAL position, loop time asked) of the primary, oldest first.
        self.samples: collections.deque[tuple[int, float]] = collections.deque(
            maxlen=MAX_SAMPLES
        )
        # The time of the newest sample the replica has replayed past, None before any.
        self.current_as_of: float | None = None
        self.up = False

    def lag(self) -> float:
        """How far behind the primary the replica is at most, now (inf: unknown)."""
        if self.current_as_of is None:
            return math.inf
        return asyncio.get_running_loop().time() - self.current_as_of

    def _refusal(self) -> str | None:
        """Why the replica may not answer now, or None when it may."""
        if not self.up:
            return "unavailable"
        if self.lag() > self.max_lag:
            return "lagging"
        return None

    async def read(
        self, query: Callable[[asyncpg.Pool], Awaitable[T]], *, search: bool = False,
        primary_because: str | None = None,
        recheck: Callable[[T], str | None] = lambda value: None,
    ) -> Read[T]:
        """`query` on the replica when it is fresh enough, else on the primary; on the
        search connections when `search`. `primary_because` sends the read to the primary
        whatever the replica's state (a READ_ROUTES reason); `recheck` names a reason to
        ask the primary after all about what the replica answered (None: it stands)."""
        if self.replica is None:
            return Read(await query(self.primary_search if search else self.primary), PRIMARY)
        reason = primary_because or self._refusal()
        if reason is None:
            replica = self.replica_search if search else self.replica
            assert replica is not None
            lag = self.lag()
            try:
                value = await query(replica)
            except Exception as exc:
                if not replica_failed(exc):
                    raise
                # Until the next sample finds it answering again.
                self.up = False
                log.warning("replica_read_failed", error=repr(exc))
                reason = "unavailable"
            else:
                reason = recheck(value)
                if reason is None:
                    self.metrics.browse_read(REPLICA, "fresh")
                    return Read(value, REPLICA, lag, replica_configured=True)
        self.metrics.browse_read(PRIMARY, reason)
        value = await query(self.primary_search if search else self.primary)
        return Read(value, PRIMARY, replica_configured=True)

    async def sample(self) -> None:
        """Read the primary's WAL position and the replica's replay position once."""
        assert self.replica is not None
        loop = asyncio.get_running_loop()
        # The time before asking: every commit before it is at or below the answer.
        asked = loop.time()
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the
        # cancellation that stops `watch` when its query finishes at the same moment.
        try:
            async with asyncio.timeout(SAMPLE_TIMEOUT):
                position = await self.primary.fetchval(PRIMARY_POSITION)
        except POSTGRES_ERRORS as exc:
            # No sample: the lag measured grows as it should while the primary is away.
            log.debug("replica_primary_sample_failed", error=repr(exc))
        else:
            self.samples.append((int(position), asked))
        was_up = self.up
        try:
            async with asyncio.timeout(SAMPLE_TIMEOUT):
                row = await self.replica.fetchrow(REPLICA_POSITION)
        except POSTGRES_ERRORS as exc:
            self.up = False
            if was_up:
                log.warning("replica_unavailable", error=repr(exc))
        else:
            assert row is not None
            # A server out of recovery (promoted, or the primary itself) replays nothing:
            # its position says nothing about what it holds of the primary's.
            self.up = bool(row["standby"])
            if self.up:
                self._replayed(int(row["replayed"]))
                if not was_up:
                    log.info("replica_available", lag_seconds=round(self.lag(), 3))
            elif was_up or self.current_as_of is None:
                log.warning("replica_not_a_standby")
        self.metrics.replica_measured(self.up, self.lag())

    def _replayed(self, position: int) -> None:
        while self.samples and self.samples[0][0] <= position:
            _, self.current_as_of = self.samples.popleft()

    async def watch(self) -> None:
        """Sample every `interval` until cancelled."""
        while True:
            try:
                await self.sample()
            except Exception:
                log.exception("replica_sample_failed")
            await asyncio.sleep(self.interval)


@contextlib.asynccontextmanager
async def open_reads(
    config: Config, primary: asyncpg.Pool, primary_search: asyncpg.Pool, metrics: Metrics
) -> AsyncIterator[Reads]:
    """The reads of a serve process: with DATABASE_READ_URL, the replica's connections and
    the lag sampling (its first sample taken before this yields), all closed on exit."""
    if config.database_read_url is None:
        yield Reads(primary, primary_search, metrics)
        return
    async with connections.open_replica(config) as (replica, replica_search):
        reads = Reads(
            primary, primary_search, metrics, replica=replica, replica_search=replica_search,
            max_lag=config.read_max_lag_seconds,
        )
        await reads.sample()
        task = asyncio.create_task(reads.watch(), name="replica-lag")
        try:
            yield reads
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
