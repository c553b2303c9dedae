"""What "a dependency is down" means, decided in one place, and waiting for it to return.

The HTTP layer answers such a failure 503; the actors keep the message they were
handling and try it again once the dependency answers, without counting the failure
against the message. Classified by exception class (and by the exceptions that caused
it), never by message text: the fault suite stops PostgreSQL and Redis under load and
finds a new way for a call to fail each time. The one exception is a dead letter, which
keeps only the repr of its error: the reconciler replays the ones an outage caused
(dead_letter_from_outage).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg
import redis.exceptions
import structlog

from eventbook.connections import RedisClient

log = structlog.get_logger(__name__)


class DependencyUnavailable(Exception):
    """A server we depend on (the mail server, say) cannot take the request now."""


UNAVAILABLE: tuple[type[BaseException], ...] = (
    DependencyUnavailable,
    OSError,
    TimeoutError,
    # class 08: the connection failed or is gone (ConnectionDoesNotExistError, ...)
    asyncpg.PostgresConnectionError,
    # class 57: shutting down, starting up, crash recovery, query cancelled
    asyncpg.exceptions.OperatorInterventionError,
    # class 53: too many connections, out of memory or disk
    asyncpg.exceptions.InsufficientResourcesError,
    # a primary demoted to a read-only standby, or default_transaction_read_only
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    # "connection is closed"; and a pooled connection that received the server's FATAL
    # "terminating connection" while idle: asyncpg leaves its protocol in the error state
    # (2), so the next query fails with "cannot switch to state 12; another operation
    # (2) is in progress" before the closed socket is noticed
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    # Redis refusing writes: a replica (READONLY) or out of memory (OOM)
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
)


# Every way a call can fail, whether its server is down or refused this one call (a
# refused log-in, a missing database, an unknown command): for the callers that report
# the server as unreachable or unavailable whatever the reason (the operator commands,
# the metrics refresh, /readyz). TimeoutError is an OSError.
POSTGRES_ERRORS: tuple[type[BaseException], ...] = (
    OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
)
REDIS_ERRORS: tuple[type[BaseException], ...] = (OSError, redis.exceptions.RedisError)


def is_outage(exc: BaseException) -> bool:
    """True when `exc`, or an exception that caused it, says a dependency is down."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, UNAVAILABLE):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


Probe = Callable[[], Awaitable[object]]


async def check(probe: Awaitable[None], timeout: float) -> str:
    """One readiness check: "ok", "read_only" (answers but refuses writes) or "down" (an
    outage, a timeout, or any error Redis answers with); any other error is raised."""
    try:
        await asyncio.wait_for(probe, timeout)
    except ReadOnly:
        return "read_only"
    except Exception as exc:
        if is_outage(exc) or isinstance(exc, redis.exceptions.RedisError):
            return "down"
        raise
    return "ok"


class Availability:
    """Waits until every probe answers, for all the waiters of one actor at once.

    One probe loop runs however many messages wait, with capped, jittered backoff, so
    work resumes within about `max_delay` of the dependency's return.
    """

    def __init__(
        self, probes: list[Probe], *, first_delay: float = 0.1, max_delay: float = 2.0,
        probe_timeout: float = 2.0,
    ) -> None:
        self.probes = probes
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.probe_timeout = probe_timeout
        self._probing: asyncio.Task[None] | None = None

    async def answers(self) -> bool:
        """One round of probes: True when every dependency answered."""
        try:
            async with asyncio.timeout(self.probe_timeout):
                for probe in self.probes:
                    await probe()
        except Exception as exc:
            log.debug("dependency_probe_failed", error=repr(exc))
            return False
        return True

    async def wait(self, stopping: asyncio.Event) -> bool:
        """Return True once every dependency answers, False if `stopping` is set first."""
        if self._probing is None or self._probing.done():
            self._probing = asyncio.create_task(self._probe_until_up())
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({self._probing, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not self._probing.done():
            return False
        return self._probing.exception() is None

    async def _probe_until_up(self) -> None:
        delay = self.first_delay
        started = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            if await self.answers():
                log.info("dependencies_available",
                         waited_s=round(asyncio.get_running_loop().time() - started, 3))
                return
            delay = min(self.max_delay, delay * 2)

    async def close(self) -> None:
        if self._probing is not None and not self._probing.done():
            self._probing.cancel()
            await asyncio.gather(self._probing, return_exceptions=True)


class ReadOnly(DependencyUnavailable):
    """The server answers but refuses writes (a standby, a read-only database)."""


async def postgres_writable(pool: asyncpg.Pool) -> None:
    """Raise unless PostgreSQL answers and would take a write."""
    read_only = await pool.fetchval(
        "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::bool"
    )
    if read_only:
        raise ReadOnly("PostgreSQL is read-only")


async def redis_writable(client: RedisClient, prefix: str) -> None:
    """Raise unless Redis answers and takes a write; ReadOnly when it answers but refuses
    (a replica's READONLY, OOM)."""
    try:
        await client.set(f"{prefix}writable", "1", px=10_000)
    except (redis.exceptions.ReadOnlyError, redis.exceptions.OutOfMemoryError) as exc:
        raise ReadOnly(f"Redis refuses writes: {exc}") from exc


# Words of a dead letter's `error` (the repr of what the handler raised) that say a
# server could not be reached, rather than that something is wrong with the message.
OUTAGE_ERRORS = (
    # The socket (asyncio, redis-py, asyncpg, aiosmtplib's messages): refused, reset,
    # timed out.
    "ConnectionRefusedError",
    "ConnectionResetError",
    "ConnectionAbortedError",
    "BrokenPipeError",
    "ConnectionError(",
    "TimeoutError",
    # redis-py 8 writes the repr of a network error as "network:ConnectionError".
    "network:",
    "Connect call failed",
    "Error connecting to",
    "Timed out connecting to",
    # Redis loading its data after a restart.
    "BusyLoadingError",
    # PostgreSQL starting, stopping, full or gone (asyncpg).
    "CannotConnectNowError",
    "ConnectionDoesNotExistError",
    "ConnectionFailureError",
    "AdminShutdownError",
    "CrashShutdownError",
    "TooManyConnectionsError",
    "InternalClientError('cannot switch to state",
)


def dead_letter_from_outage(letter: Mapping[str, Any]) -> bool:
    """True when a dead letter was given up on because PostgreSQL, Redis or the mail
    server was unreachable, so replaying it once they are back can succeed: its `cause`
    says so, or, for letters written before the runtime recorded a cause, its `error`
    names a connection failure (OUTAGE_ERRORS)."""
    cause = letter.get("cause")
    if cause:
        return bool(cause == "outage")
    error = str(letter.get("error") or "")
    return any(marker in error for marker in OUTAGE_ERRORS)
