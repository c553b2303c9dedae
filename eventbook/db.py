"""Migrations, and the one place that reads sql/.

sql/ holds SQL in three places, each with one rule:

- migrations/NNNN_name.sql: tables, indexes, constraints. Append-only: numbers unique
  and increasing, each applied once, in its own transaction, never below one already
  applied.
- functions/NAME.sql: one stored procedure or trigger each (a trigger's file holds its
  function and its CREATE OR REPLACE TRIGGER), named for the function it defines.
  Re-applied by every migrate after the pending migrations, so a function's current
  text is its file.
- queries/NAME.sql: the named queries the Python code runs, read once and looked up
  with `query(NAME)`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path

import asyncpg
import structlog

log = structlog.get_logger(__name__)

# Any constant works; it only has to be the same in every eventbook process.
MIGRATION_LOCK = 0x6576_656E_7462_6B  # "eventbk"
# The comment on every function migrate applies from sql/functions/: what it may drop.
FUNCTION_MARK = "eventbook: applied by migrate from sql/functions/"

MIGRATION_NAME = re.compile(r"(\d{4})_[a-z0-9_]+")


class MigrationError(Exception):
    """The database or the migration files are not in a state migrate may act on; the
    message says what to do."""


def sql_dir() -> Path:
    """sql/ at the top of a source checkout, or eventbook/sql inside an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "sql", here.parent / "sql"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise FileNotFoundError("eventbook's sql/ directory is missing from this installation")


def migrations(directory: Path | None = None) -> list[tuple[str, str]]:
    """(name, sql) of every file in sql/migrations, in number order.

    Raises MigrationError unless every name is NNNN_words and the numbers are unique:
    the number alone orders the history."""
    directory = directory or sql_dir() / "migrations"
    numbered: dict[int, Path] = {}
    for path in directory.glob("*.sql"):
        match = MIGRATION_NAME.fullmatch(path.stem)
        if match is None:
            raise MigrationError(
                f"migration file {path.name} is not named NNNN_words.sql (four digits, "
                "then lower-case words joined by _)"
            )
        number = int(match[1])
        if number in numbered:
            raise MigrationError(
                f"migration files {numbered[number].name} and {path.name} have the same "
                "number: give the newer one the next free number"
            )
        numbered[number] = path
    return [(numbered[n].stem, numbered[n].read_text()) for n in sorted(numbered)]


def functions(directory: Path | None = None) -> list[tuple[str, str]]:
    """(name, sql) of every file in sql/functions, in file-name order."""
    directory = directory or sql_dir() / "functions"
    return [(path.stem, path.read_text()) for path in sorted(directory.glob("*.sql"))]


@functools.cache
def _queries() -> Mapping[str, str]:
    return {path.stem: path.read_text() for path in (sql_dir() / "queries").glob("*.sql")}


def query(name: str) -> str:
    """The text of sql/queries/NAME.sql. The files are read once, at the first call;
    modules bind their queries at import, so a missing file fails at start."""
    try:
        return _queries()[name]
    except KeyError:
        raise KeyError(f"no query {name!r} in {sql_dir() / 'queries'}") from None


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations, each in its own transaction, then every function file in
    one transaction; return the names of the migrations applied.

    A session advisory lock makes concurrent starts apply each migration exactly once:
    the second process waits, then finds nothing left to do. Raises MigrationError,
    changing nothing, for a database this history did not make or a pending migration
    numbered below one already applied.
    """
    history = migrations()
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(query("migrations_table"))
        done = {row["name"] for row in await conn.fetch(query("migrations_applied"))}
        _check_history(done, [name for name, _ in history])
        for name, sql in history:
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(query("migration_record"), name)
            log.info("migration_applied", migration=name)
            applied.append(name)
        await _apply_functions(conn, functions())
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied


def _check_history(done: set[str], history: list[str]) -> None:
    unknown = sorted(done - set(history))
    if unknown:
        raise MigrationError(
            f"the database has migrations this eventbook does not know ({', '.join(unknown)}):"
            " it was made by another history of migrations. Drop the database and migrate"
            " again; for the embedded default, stop every eventbook process using it (and"
            " `eventbook embedded stop` if it was kept), then remove"
            " EVENTBOOK_DATA_DIR/postgres (default .eventbook/postgres)"
        )
    if not done:
        return
    last = max(history.index(name) for name in done)
    below = [name for name in history[:last] if name not in done]
    if below:
        raise MigrationError(
            f"pending migrations {', '.join(below)} are numbered below {history[last]},"
            " which is already applied: migrations are append-only, so give them numbers"
            " after the last one"
        )


async def _apply_functions(conn: asyncpg.Connection, files: list[tuple[str, str]]) -> None:
    """Apply every function file in one transaction, then drop the functions an earlier
    migrate applied that no file defined this time (a function removed, or one whose
    arguments changed: that is a new function, and the old one would otherwise stay
    callable). Each function applied is marked with a comment, FUNCTION_MARK, so that
    functions eventbook did not make (an operator's, another tool's) are never dropped.

    CREATE OR REPLACE keeps a function's oid, so statements planned against it in other
    sessions keep working. It cannot change a function's return type: then the
    transaction is tried again, dropping the functions named as that file first."""
    recreate: set[str] = set()
    while True:
        failed: str | None = None
        try:
            async with conn.transaction():
                for name in recreate:
                    for routine in await conn.fetch(query("functions_named"), name):
                        # Dynamic: DROP takes no parameters. regprocedure's text is the
                        # catalogue's own, quoted where it must be.
                        await conn.execute(f"DROP ROUTINE {routine['signature']}")
                for name, sql in files:
                    failed = name
                    await conn.execute(sql)
                failed = None
                for routine in await conn.fetch(query("functions_not_replaced"), FUNCTION_MARK):
                    await conn.execute(f"DROP ROUTINE {routine['signature']}")
                    log.info("function_dropped", function=routine["signature"])
                for routine in await conn.fetch(query("functions_replaced")):
                    await conn.execute(
                        f"COMMENT ON ROUTINE {routine['signature']} IS '{FUNCTION_MARK}'"
                    )
            return
        except asyncpg.InvalidFunctionDefinitionError:
            if failed is None or failed in recreate:
                raise
            recreate.add(failed)
