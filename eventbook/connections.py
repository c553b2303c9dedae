"""The connections a process opens, each opened and closed one way: the PostgreSQL pool,
the event search's own connections, those of a read replica and the Redis client (of one
server or of a Redis Cluster). `serve` (through the app's cleanup_ctx) and `worker` use
the same context managers."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeAlias, TypeGuard

import asyncpg
import redis.asyncio
import redis.exceptions
import structlog
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from eventbook.config import Config

log = structlog.get_logger(__name__)

# What every user of Redis takes: the client of one server or of a cluster. Both speak
# the same commands; on a cluster every multi-key command, transaction and script must
# keep to one slot, which the keys' hash tags ensure (eventbook.actors.stream.topic_tag).
RedisClient: TypeAlias = redis.asyncio.Redis | RedisCluster


async def init_connection(conn: asyncpg.Connection) -> None:
    """Decode json/jsonb to Python values on every pooled connection."""
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond asyncpg's own (an open transaction is
    rolled back, listeners dropped). Pooled connections never SET, LISTEN, hold advisory
    locks or cursors (the relay listens on a connection of its own), so asyncpg's default
    reset query would be a second round trip per request for nothing.
    The search pool's connections SET their timeout once, when opened, to keep it (through
    a pooler, each transaction sets it: PoolerConnection)."""


class PoolerConnection(asyncpg.Connection):  # type: ignore[misc]
    """A connection through a pooler in transaction mode (PgBouncer pool_mode=transaction),
    which hands each transaction to whichever server connection is free. A session's
    settings would stay on a server connection other clients get next (and PgBouncer
    refuses unknown startup parameters), so the pool's `settings` are made
    transaction-local instead: set with set_config(..., true) in every transaction.

    A statement without arguments goes as one simple query behind the settings: its
    statements run in one implicit transaction, and a BEGIN among them (a `transaction()`
    block starting) carries the settings into the transaction it opens. A statement with
    arguments (the extended protocol) runs in a transaction opened that way unless one is
    open already: BEGIN and COMMIT, two more round trips each.

    asyncpg ends a statement's Parse/Describe with Flush, not Sync, so the pooler keeps
    the server connection until its Bind/Execute/Sync even outside a transaction; only
    named prepared statements (its statement cache, which the pool turns off) would break.
    The transaction is for the settings alone.
    """

    settings_sql = ""

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        if not self.settings_sql or self.is_in_transaction():
            return str(await super().execute(query, *args, timeout=timeout))
        if not args:
            return str(await super().execute(f"{self.settings_sql}; {query}", timeout=timeout))
        return str(await self._in_transaction(super().execute, query, *args, timeout=timeout))

    async def executemany(self, command: str, args: Any, *, timeout: float | None = None) -> None:
        await self._in_transaction(super().executemany, command, args, timeout=timeout)

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> list[asyncpg.Record]:
        return list(await self._in_transaction(super().fetch, query, *args, **kwargs))

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> asyncpg.Record | None:
        return await self._in_transaction(super().fetchrow, query, *args, **kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await self._in_transaction(super().fetchval, query, *args, **kwargs)

    async def fetchmany(self, query: str, args: Any, **kwargs: Any) -> list[asyncpg.Record]:
        return list(await self._in_transaction(super().fetchmany, query, args, **kwargs))

    async def _in_transaction(self, method: Callable[..., Awaitable[Any]], *args: Any,
                              **kwargs: Any) -> Any:
        if not self.settings_sql or self.is_in_transaction():
            return await method(*args, **kwargs)
        await self.execute("BEGIN")
        try:
            result = await method(*args, **kwargs)
        except BaseException:
            if not self.is_closed() and self.is_in_transaction():
                # The statement's own error is the one to report; a connection left in
                # the transaction is rolled back by the pool on release.
                with contextlib.suppress(Exception):
                    await super().execute("ROLLBACK")
            raise
        await super().execute("COMMIT")
        return result


def pooler_connection(settings: Mapping[str, str]) -> type[PoolerConnection]:
    """The PoolerConnection class of a pool whose transactions all get `settings`."""
    calls = ", ".join(
        f"set_config({_literal(name)}, {_literal(value)}, true)"
        for name, value in settings.items()
    )
    settings_sql = f"SELECT {calls}" if calls else ""
    return type("PoolerConnection", (PoolerConnection,), {"settings_sql": settings_sql})


def _literal(text: str) -> str:
    """`text` as an SQL string literal (standard_conforming_strings, on by default)."""
    return "'" + text.replace("'", "''") + "'"


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
    settings: Mapping[str, str] | None = None, pooler: bool = False, **kwargs: Any,
) -> asyncpg.Pool:
    """A pool whose every wait has a deadline: opening a connection, waiting for a free
    one, and each statement. A server that hangs costs a caller seconds, not minutes.

    `settings` hold for every statement: session settings given at connect, or with
    `pooler` (`dsn` is a pooler in transaction mode) set in each transaction, on
    PoolerConnections without a statement cache (a named prepared statement lives on one
    server connection; the pooler's next transaction may run on another)."""
    if pooler:
        kwargs.update(
            connection_class=pooler_connection(settings or {}), statement_cache_size=0
        )
    else:
        kwargs.update(connection_class=asyncpg.Connection,
                      server_settings={**kwargs.get("server_settings", {}), **(settings or {})})
    pool = Pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        init=init,
        reset=keep_session,
        loop=None,
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
        settings={"eventbook.waitlist_offer_seconds": str(config.waitlist_offer_seconds)},
        pooler=config.pooled,
    )


async def create_search_pool(
    dsn: str, size: int, timeout_ms: int, min_size: int | None = None, pooler: bool = False
) -> asyncpg.Pool:
    """The connections event searches run on, apart from the pool bookings use: at most
    `size` searches run at once, each stopped by PostgreSQL after `timeout_ms`, so no
    number of searches can hold every connection or more than `size` server processes.

    Set on these connections only: the planner prices to_tsvector() per row far below
    its real cost, so for a word most events contain it would compute the vector of
    every event (a sequential scan, 1.1 s at 100,000 events) rather than read the
    search index (0.1 s); and one search never takes parallel workers, so it costs one
    core at most. `min_size` (default: all) are opened at once."""
    settings = {"enable_seqscan": "off", "max_parallel_workers_per_gather": "0"}
    opened = size if min_size is None else min_size
    if pooler:
        # Set in each transaction, so the timeout is one more of them.
        settings["statement_timeout"] = f"{int(timeout_ms)}ms"
        return await create_pool(dsn, opened, size, settings=settings, pooler=True)

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
    return await create_pool(dsn, opened, size, init, settings=settings)


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
        config.database_url, config.search_concurrency, config.search_timeout_ms,
        pooler=config.pooled,
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
    The first searches on it pay for opening their connection. With a pooler
    (EVENTBOOK_DB_POOLER), the replica is taken to be reached through one too."""
    assert config.database_read_url is not None
    pool = await create_config_pool(config, 0, config.db_pool_max, config.database_read_url)
    try:
        search = await create_search_pool(
            config.database_read_url, config.search_concurrency, config.search_timeout_ms,
            min_size=0, pooler=config.pooled,
        )
        try:
            yield pool, search
        finally:
            await search.close()
    finally:
        await pool.close()


def _redis_retry() -> Retry:
    # After Redis restarts, every pooled connection is dead and would fail its next
    # command once: retry that once, at once, on a fresh connection. Only connection
    # errors: a timeout is not retried (a command may have run; a blackholed server
    # would double every wait). A cluster client also retries once after a failover
    # (CLUSTERDOWN) or a timeout, having refreshed its map of slots.
    return Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))


class WaitingRedisCluster(RedisCluster):
    """redis-py's cluster client, its commands and pipelines waiting up to `wait`
    seconds for one of `in_flight` places, as commands wait for a connection of the
    single server's blocking pool.

    The cluster client itself opens at most max_connections to each node and fails a
    command at once when they are all busy, with a ConnectionError that also makes it
    rebuild its map of the cluster and drop the connections in use: a stream actor
    handling 64 messages at once would fail them all. With no more commands in flight
    than connections per node, none is refused."""

    def __init__(self, *args: Any, in_flight: int, wait: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._places = asyncio.Semaphore(in_flight)
        self._wait = wait

    @asynccontextmanager
    async def place(self) -> AsyncIterator[None]:
        if self._initialize:
            # redis-py learns the cluster's slots inside the first command, and again
            # after a connection error: commands started together meanwhile lose their
            # connections ("Connection lost"). Every command waits for that first.
            await self.initialize()
        try:
            async with asyncio.timeout(self._wait):
                await self._places.acquire()
        except TimeoutError:
            raise redis.exceptions.ConnectionError("No connection available.") from None
        try:
            yield
        finally:
            self._places.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.place():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        if transaction or shard_hint:
            # redis-py queues each command of a cluster transaction in a thread of its
            # own, with an event loop of its own, and waits for it: the caller's loop
            # stops meanwhile. What must happen together is a script instead.
            raise redis.exceptions.RedisClusterException(
                "no MULTI/EXEC on a cluster here: use a script over one slot's keys"
            )
        # (ClusterPipeline declares an attribute only RedisCluster sets: not abstract.)
        return _WaitingClusterPipeline(self, transaction)  # type: ignore[abstract]


class _WaitingClusterPipeline(ClusterPipeline):
    cluster_client: WaitingRedisCluster

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        async with self.cluster_client.place():
            return await super().execute(raise_on_error, allow_redirections)


def is_cluster(client: RedisClient) -> TypeGuard[RedisCluster]:
    return isinstance(client, RedisCluster)


def redis_client(config: Config, cluster: bool | None = None) -> RedisClient:
    """The client of `config.redis_url`: a cluster's when `cluster` (by default
    config.redis_cluster) is true, else one server's. Connects lazily."""
    assert config.redis_url is not None
    if config.redis_cluster if cluster is None else cluster:
        # At most redis_pool_max commands in flight, so at most that many connections
        # to any one node.
        return WaitingRedisCluster.from_url(
            config.redis_url,
            in_flight=config.redis_pool_max,
            wait=5,
            max_connections=config.redis_pool_max,
            socket_timeout=5,
            socket_connect_timeout=2,
            decode_responses=True,
            retry=_redis_retry(),
        )
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        config.redis_url,
        max_connections=config.redis_pool_max,
        timeout=5,
        socket_timeout=5,
        socket_connect_timeout=2,
        decode_responses=True,
        retry=_redis_retry(),
    )
    return redis.asyncio.Redis(connection_pool=pool)


async def redis_is_cluster(config: Config) -> bool:
    """config.redis_cluster when set; else whether REDIS_URL's server says it is a
    cluster node (INFO cluster). A server that does not answer is taken for a single
    one (logged): deployments on a cluster set EVENTBOOK_REDIS_CLUSTER=1 so as not to
    depend on the server answering at start."""
    if config.redis_cluster is not None:
        return config.redis_cluster
    assert config.redis_url is not None
    probe = redis.asyncio.Redis.from_url(
        config.redis_url, socket_timeout=2, socket_connect_timeout=2, decode_responses=True
    )
    try:
        info = await probe.info("cluster")
    except (OSError, redis.exceptions.RedisError) as exc:
        log.warning("redis_cluster_unknown", error=repr(exc), assumed="single server",
                    setting="EVENTBOOK_REDIS_CLUSTER")
        return False
    finally:
        await probe.aclose()
    return bool(int(info.get("cluster_enabled", 0)))


@asynccontextmanager
async def open_redis(config: Config) -> AsyncIterator[RedisClient]:
    """The process's Redis client, its connections closed on exit. Asks the server
    whether it is a cluster node unless EVENTBOOK_REDIS_CLUSTER says; otherwise lazy."""
    client = redis_client(config, await redis_is_cluster(config))
    try:
        yield client
    finally:
        await client.aclose()
