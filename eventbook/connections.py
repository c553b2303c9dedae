"""The connections a process opens, each opened and closed one way: the PostgreSQL pool,
the event search's own connections, those of a read replica and the Redis client.
`serve` (through the app's cleanup_ctx) and `worker` use the same context managers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from eventbook.config import Config


async def init_connection(conn: asyncpg.Connection) -> None:
    """Decode json/jsonb to Python values on every pooled connection."""
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond asyncpg's own (an open transaction is
    rolled back, listeners dropped). Pooled connections never SET, LISTEN, hold advisory
    locks or cursors (the relay listens on a connection of its own), so asyncpg's default
    reset query would be a second round trip per request for nothing.
    The search pool's connections SET their timeout once, when opened, to keep it."""


class Pool(asyncpg.Pool):  # type: ignore[misc]
    """asyncpg's pool with a deadline on every wait for a connection.

    asyncpg's `Pool.fetch` and friends acquire without a timeout, so against a database
    that hangs (a frozen host, a partition without resets) callers would queue for a
    connection for as long as the hung statements take. Here every acquire gives up
    after `acquire_timeout` with TimeoutError, which callers answer 503.
    """

    def __init__(self, *args: Any, acquire_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> Any:
        return super().acquire(timeout=self.acquire_timeout if timeout is None else timeout)


async def create_pool(
    dsn: str, min_size: int, max_size: int,
    init: Callable[[asyncpg.Connection], Awaitable[None]] = init_connection, *,
    connect_timeout: float = 2, acquire_timeout: float = 2, statement_timeout: float = 3,
    **kwargs: Any,
) -> asyncpg.Pool:
    """A pool whose every wait has a deadline: opening a connection, waiting for a free
    one, and each statement. A server that hangs costs a caller seconds, not minutes."""
    pool = Pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        init=init,
        reset=keep_session,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        acquire_timeout=acquire_timeout,
        timeout=connect_timeout,
        command_timeout=statement_timeout,
        **kwargs,
    )
    await pool
    return pool


async def create_config_pool(
    config: Config, min_size: int, max_size: int, dsn: str | None = None
) -> asyncpg.Pool:
    """The pool of a serve or worker process (on `dsn`, default DATABASE_URL), its
    deadlines from the configuration.

    The stored functions read the settings they need from the connection: a waiting-list
    offer is made wherever tickets come back (sql/functions/offer_waitlist.sql), deep in
    functions that otherwise need no configuration."""
    dsn = dsn or config.database_url
    assert dsn is not None
    return await create_pool(
        dsn, min_size, max_size,
        connect_timeout=config.db_connect_timeout_seconds,
        acquire_timeout=config.db_acquire_timeout_seconds,
        statement_timeout=config.db_statement_timeout_seconds,
        server_settings={
            "eventbook.waitlist_offer_seconds": str(config.waitlist_offer_seconds),
        },
    )


async def create_search_pool(
    dsn: str, size: int, timeout_ms: int, min_size: int | None = None
) -> asyncpg.Pool:
    """The connections event searches run on, apart from the pool bookings use: at most
    `size` searches run at once, each stopped by PostgreSQL after `timeout_ms`, so no
    number of searches can hold every connection or more than `size` server processes.

    Set on these connections only: the planner prices to_tsvector() per row far below
    its real cost, so for a word most events contain it would compute the vector of
    every event (a sequential scan, 1.1 s at 100,000 events) rather than read the
    search index (0.1 s); and one search never takes parallel workers, so it costs one
    core at most. `min_size` (default: all) are opened at once."""

    async def init(conn: asyncpg.Connection) -> None:
        await init_connection(conn)
        # Only now: the catalogue queries that set up the codecs must not meet a timeout
        # meant for searches.
        # set_config, unlike SET, takes the value as a parameter.
        await conn.execute(
            "SELECT set_config('statement_timeout', $1, false)", f"{int(timeout_ms)}ms"
        )

    # Opened at start and kept: a search waits for a free one no longer than its own
    # timeout, which leaves no time to open a connection.
    return await create_pool(
        dsn, size if min_size is None else min_size, size, init,
        server_settings={"enable_seqscan": "off", "max_parallel_workers_per_gather": "0"},
    )


@asynccontextmanager
async def open_postgres(
    config: Config, min_size: int | None = None, max_size: int | None = None
) -> AsyncIterator[asyncpg.Pool]:
    """The process's pool (sized by the configuration unless told), closed on exit."""
    pool = await create_config_pool(
        config,
        config.db_pool_min if min_size is None else min_size,
        config.db_pool_max if max_size is None else max_size,
    )
    try:
        yield pool
    finally:
        await pool.close()


@asynccontextmanager
async def open_search(config: Config) -> AsyncIterator[asyncpg.Pool]:
    """The event search's connections, closed on exit."""
    assert config.database_url is not None
    pool = await create_search_pool(
        config.database_url, config.search_concurrency, config.search_timeout_ms
    )
    try:
        yield pool
    finally:
        await pool.close()


@asynccontextmanager
async def open_replica(config: Config) -> AsyncIterator[tuple[asyncpg.Pool, asyncpg.Pool]]:
    """The read replica's pool and its event-search connections (DATABASE_READ_URL),
    closed on exit. Neither connects before its first use, so a replica that is down
    neither delays nor fails the start: reads go to the primary until it answers.
    The first searches on it pay for opening their connection."""
    assert config.database_read_url is not None
    pool = await create_config_pool(config, 0, config.db_pool_max, config.database_read_url)
    try:
        search = await create_search_pool(
            config.database_read_url, config.search_concurrency, config.search_timeout_ms,
            min_size=0,
        )
        try:
            yield pool, search
        finally:
            await search.close()
    finally:
        await pool.close()


def redis_client(config: Config) -> redis.asyncio.Redis:
    assert config.redis_url is not None
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        config.redis_url,
        max_connections=config.redis_pool_max,
        timeout=5,
        socket_timeout=5,
        socket_connect_timeout=2,
        decode_responses=True,
        # After Redis restarts, every pooled connection is dead and would fail its next
        # command once: retry that once, at once, on a fresh connection. Only connection
        # errors: a timeout is not retried (a command may have run; a blackholed server
        # would double every wait).
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
    )
    return redis.asyncio.Redis(connection_pool=pool)


@asynccontextmanager
async def open_redis(config: Config) -> AsyncIterator[redis.asyncio.Redis]:
    """The process's Redis client, its connections closed on exit. Connects lazily:
    nothing is sent before the first command."""
    client = redis_client(config)
    try:
        yield client
    finally:
        await client.aclose()
