"""The asyncpg pool, migrations, and the one place that reads sql/."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from eventbook import emails
from eventbook.config import Config

log = structlog.get_logger(__name__)

# Any constant works; it only has to be the same in every eventbook process.
MIGRATION_LOCK = 0x6576_656E_7462_6B  # "eventbk"


# What a migration needs that SQL cannot compute, by migration: run in the migration's
# transaction, right after its file.
DATA_STEPS: dict[str, Callable[[asyncpg.Connection], Awaitable[None]]] = {
    "0012_email_key": emails.fill_keys,
}


def sql_dir() -> Path:
    """sql/ at the top of a source checkout, or eventbook/sql inside an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "sql", here.parent / "sql"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise FileNotFoundError("eventbook's sql/ directory is missing from this installation")


def migrations() -> list[tuple[str, str]]:
    """(name, sql) of every file in sql/migrations, in file-name order."""
    files = sorted((sql_dir() / "migrations").glob("*.sql"))
    return [(path.stem, path.read_text()) for path in files]


def query(name: str) -> str:
    """The text of sql/NAME.sql: queries too long to read inline."""
    return (sql_dir() / f"{name}.sql").read_text()


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations, each in its own transaction; return the names applied.

    A session advisory lock makes concurrent starts apply each migration exactly once:
    the second process waits, then finds nothing left to do.
    """
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["name"] for row in await conn.fetch("SELECT name FROM schema_migrations")}
        for name, sql in migrations():
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                if name in DATA_STEPS:
                    await DATA_STEPS[name](conn)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            log.info("migration_applied", migration=name)
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied


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


async def create_config_pool(config: Config, min_size: int, max_size: int) -> asyncpg.Pool:
    """The pool of a serve or worker process, its deadlines from the configuration."""
    assert config.database_url is not None
    return await create_pool(
        config.database_url, min_size, max_size,
        connect_timeout=config.db_connect_timeout_seconds,
        acquire_timeout=config.db_acquire_timeout_seconds,
        statement_timeout=config.db_statement_timeout_seconds,
    )


async def create_search_pool(dsn: str, size: int, timeout_ms: int) -> asyncpg.Pool:
    """The connections event searches run on, apart from the pool bookings use: at most
    `size` searches run at once, each stopped by PostgreSQL after `timeout_ms`, so no
    number of searches can hold every connection or more than `size` server processes.

    Set on these connections only: the planner prices to_tsvector() per row far below
    its real cost, so for a word most events contain it would compute the vector of
    every event (a sequential scan, 1.1 s at 100,000 events) rather than read the
    search index (0.1 s); and one search never takes parallel workers, so it costs one
    core at most."""

    async def init(conn: asyncpg.Connection) -> None:
        await init_connection(conn)
        # Only now: the catalogue queries that set up the codecs must not meet a timeout
        # meant for searches.
        await conn.execute(f"SET statement_timeout = {int(timeout_ms)}")

    # Opened at start and kept: a search waits for a free one no longer than its own
    # timeout, which leaves no time to open a connection.
    return await create_pool(
        dsn, size, size, init,
        server_settings={"enable_seqscan": "off", "max_parallel_workers_per_gather": "0"},
    )
