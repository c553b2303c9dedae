"""Migrations, and the one place that reads sql/."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import structlog

from eventbook import emails

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
