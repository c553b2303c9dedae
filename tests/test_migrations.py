"""Migrations are append-only and numbered; stored procedures are re-applied from
sql/functions by every migrate, whatever changed in them."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from eventbook import db
from eventbook.check import consistency_report
from eventbook.config import Config
from tests.processes import environment, run

OLD_HISTORY = ["0001_schema", "0002_booking_procedures", "0005_book_tickets_batch"]


@pytest.fixture
async def conn(database: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to this test's migrated database."""
    connection = await asyncpg.connect(database)
    yield connection
    await connection.close()


async def applied(conn: asyncpg.Connection) -> list[str]:
    return [row["name"] for row in
            await conn.fetch("SELECT name FROM schema_migrations ORDER BY name")]


# -- the files ----------------------------------------------------------------------------


def test_the_migration_files_are_numbered_one_after_another() -> None:
    numbers = [int(name[:4]) for name, _ in db.migrations()]
    assert numbers == list(range(1, len(numbers) + 1))


def test_two_migration_files_with_one_number_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_tables.sql").write_text("SELECT 1")
    (tmp_path / "0001_more_tables.sql").write_text("SELECT 1")
    with pytest.raises(db.MigrationError, match="the same number"):
        db.migrations(tmp_path)


def test_a_migration_file_without_a_number_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tables.sql").write_text("SELECT 1")
    with pytest.raises(db.MigrationError, match="NNNN_words"):
        db.migrations(tmp_path)


def test_the_migrations_hold_no_functions() -> None:
    routine = re.compile(r"CREATE\s+(OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE|TRIGGER)", re.I)
    for name, sql in db.migrations():
        assert routine.search(sql) is None, name


# -- refusals -----------------------------------------------------------------------------


async def test_a_pending_migration_below_an_applied_one_is_refused(
    conn: asyncpg.Connection,
) -> None:
    first = db.migrations()[0][0]
    await conn.execute("DELETE FROM schema_migrations WHERE name = $1", first)
    before = await applied(conn)
    with pytest.raises(db.MigrationError, match=f"{first} .*below"):
        await db.migrate(conn)
    assert await applied(conn) == before


async def test_a_database_made_by_the_old_history_is_refused_with_what_to_do(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute("DELETE FROM schema_migrations")
    await conn.executemany("INSERT INTO schema_migrations (name) VALUES ($1)",
                           [(name,) for name in OLD_HISTORY])
    with pytest.raises(db.MigrationError) as refused:
        await db.migrate(conn)
    message = str(refused.value)
    assert "0002_booking_procedures" in message
    assert "Drop the database" in message
    assert "eventbook embedded stop" in message
    assert await applied(conn) == sorted(OLD_HISTORY)


def test_the_migrate_command_prints_a_refusal_as_one_line_and_fails(
    config: Config,
) -> None:
    async def make_old() -> None:
        assert config.database_url is not None
        connection = await asyncpg.connect(config.database_url)
        try:
            await connection.execute(
                "INSERT INTO schema_migrations (name) VALUES ('0005_book_tickets_batch')"
            )
        finally:
            await connection.close()

    asyncio.run(make_old())
    result = run(["migrate"], environment(config))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("eventbook:")]
    assert len(lines) == 1
    assert "0005_book_tickets_batch" in lines[0] and "Drop the database" in lines[0]
    assert result.stdout == ""


# -- functions ----------------------------------------------------------------------------


async def signatures(conn: asyncpg.Connection, name: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT p.oid::regprocedure::text AS signature, pg_get_function_result(p.oid) AS result"
        " FROM pg_proc p WHERE p.proname = $1 AND p.pronamespace = current_schema()::regnamespace",
        name,
    )
    return sorted(f"{row['signature']} -> {row['result']}" for row in rows)


async def mark_as_applied(conn: asyncpg.Connection, signature: str) -> None:
    """As if an earlier migrate had applied this function from a file since removed."""
    await conn.execute(f"COMMENT ON ROUTINE {signature} IS '{db.FUNCTION_MARK}'")


async def test_every_migrate_restores_each_function_to_its_file(
    conn: asyncpg.Connection,
) -> None:
    original = await signatures(conn, "cancel_event")
    await conn.execute(
        "CREATE OR REPLACE FUNCTION cancel_event(p_event uuid, p_request_id text)"
        " RETURNS TABLE (outcome text, event events) LANGUAGE sql AS $$"
        " SELECT 'edited by hand', NULL::events $$"
    )
    assert await db.migrate(conn) == []
    assert await signatures(conn, "cancel_event") == original
    outcome = await conn.fetchval(
        "SELECT outcome FROM cancel_event(gen_random_uuid(), NULL)"
    )
    assert outcome == "event_not_found"


async def test_a_function_whose_arguments_changed_leaves_no_old_version(
    conn: asyncpg.Connection,
) -> None:
    original = await signatures(conn, "cancel_booking")
    # As if the file had defined it with one argument more before.
    await conn.execute(
        "CREATE FUNCTION cancel_booking(p_booking uuid, p_user uuid, p_request_id text,"
        " p_reason text) RETURNS integer LANGUAGE sql AS 'SELECT 1'"
    )
    await mark_as_applied(conn, "cancel_booking(uuid, uuid, text, text)")
    await db.migrate(conn)
    assert await signatures(conn, "cancel_booking") == original


async def test_a_function_whose_return_type_changed_is_applied(
    conn: asyncpg.Connection,
) -> None:
    original = await signatures(conn, "cancel_booking")
    # As if the file had returned something else before: CREATE OR REPLACE cannot change
    # a return type.
    await conn.execute("DROP FUNCTION cancel_booking(uuid, uuid, text)")
    await conn.execute(
        "CREATE FUNCTION cancel_booking(p_booking uuid, p_user uuid, p_request_id text)"
        " RETURNS integer LANGUAGE sql AS 'SELECT 1'"
    )
    await db.migrate(conn)
    assert await signatures(conn, "cancel_booking") == original


async def test_a_function_an_earlier_migrate_applied_and_no_file_defines_is_dropped(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute("CREATE FUNCTION retired_rule(integer) RETURNS integer"
                       " LANGUAGE sql AS 'SELECT $1'")
    await mark_as_applied(conn, "retired_rule(integer)")
    await db.migrate(conn)
    assert await signatures(conn, "retired_rule") == []


async def test_a_function_eventbook_did_not_make_is_left_alone(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute("CREATE FUNCTION operators_own(integer) RETURNS integer"
                       " LANGUAGE sql AS 'SELECT $1'")
    await db.migrate(conn)
    assert await signatures(conn, "operators_own") == ["operators_own(integer) -> integer"]


async def test_every_trigger_is_in_place_after_migrate(conn: asyncpg.Connection) -> None:
    await conn.execute("DROP TRIGGER outbox_announce ON outbox")
    await db.migrate(conn)
    triggers = await conn.fetch(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'outbox'::regclass"
        " AND NOT tgisinternal ORDER BY tgname"
    )
    assert [row["tgname"] for row in triggers] == ["outbox_announce", "outbox_wake"]


# -- queries ------------------------------------------------------------------------------


async def test_every_named_query_prepares_against_the_schema(conn: asyncpg.Connection) -> None:
    names = sorted(path.stem for path in (db.sql_dir() / "queries").glob("*.sql"))
    assert names
    for name in names:
        await conn.prepare(db.query(name))


def test_an_unknown_query_name_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="no query 'no_such_query'"):
        db.query("no_such_query")


async def test_a_database_with_bookings_before_ticket_types_gets_a_type_and_items(
    conn: asyncpg.Connection,
) -> None:
    """Upgrading: each event becomes one free type holding its sold tickets, each booking
    an item of it, and the counts agree with what `eventbook check` verifies."""
    await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    await conn.execute(db.query("migrations_table"))
    for name, sql in db.migrations():
        if name < "0003":
            await conn.execute(sql)
            await conn.execute(db.query("migration_record"), name)
    organizer, customer = [
        await conn.fetchval(
            "INSERT INTO users (email, email_key, name, role, password_hash)"
            " VALUES ($1, $1, 'Old', $2, '!') RETURNING id", f"{role}@example.com", role,
        )
        for role in ("organizer", "customer")
    ]
    sold, cancelled = [
        await conn.fetchval(
            "INSERT INTO events (organizer_id, title, starts_at, capacity, available_tickets,"
            " status) VALUES ($1, 'Old', now() + interval '1 day', 10, $2, $3) RETURNING id",
            organizer, available, status,
        )
        for available, status in ((7, "scheduled"), (10, "cancelled"))
    ]
    await conn.execute(
        "INSERT INTO bookings (event_id, user_id, quantity) VALUES ($1, $2, 2), ($1, $2, 1)",
        sold, customer,
    )
    await conn.execute(
        "INSERT INTO bookings (event_id, user_id, quantity, status, cancel_reason,"
        " cancelled_at) VALUES ($1, $2, 4, 'cancelled', 'event_cancelled', now())",
        cancelled, customer,
    )

    assert await db.migrate(conn) == [
        "0003_ticket_types_and_holds", "0004_waitlist", "0005_webhooks"
    ]

    types = await conn.fetch(
        "SELECT event_id, name, price_cents, taken FROM ticket_types ORDER BY taken DESC"
    )
    assert [(t["event_id"], t["name"], t["price_cents"], t["taken"]) for t in types] == [
        (sold, "General admission", 0, 3), (cancelled, "General admission", 0, 0)
    ]
    assert await conn.fetchval("SELECT count(*) FROM booking_items") == 3
    for check in ("check_ticket_counts", "check_ticket_type_counts"):
        assert await conn.fetch(db.query(check), 100) == []


async def test_a_database_with_ticket_types_bookings_and_holds_gains_the_waiting_list(
    conn: asyncpg.Connection,
) -> None:
    """Upgrading to the waiting list: a sold-out event of two types, with a booking and a
    live hold taken before it, keeps its counts; the hold confirms, and a customer joins
    the waiting list of the sold-out type and is offered the tickets a cancellation
    gives back."""
    await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    await conn.execute(db.query("migrations_table"))
    for name, sql in db.migrations():
        if name < "0004":
            await conn.execute(sql)
            await conn.execute(db.query("migration_record"), name)
    organizer, buyer, holder, waiter = [
        await conn.fetchval(
            "INSERT INTO users (email, email_key, name, role, password_hash)"
            " VALUES ($1, $1, 'Old', $2, '!') RETURNING id", f"{name}@example.com", role,
        )
        for name, role in (("organizer", "organizer"), ("buyer", "customer"),
                           ("holder", "customer"), ("waiter", "customer"))
    ]
    event = await conn.fetchval(
        "INSERT INTO events (organizer_id, title, starts_at, capacity, available_tickets)"
        " VALUES ($1, 'Old', now() + interval '1 day', 3, 0) RETURNING id", organizer,
    )
    standard, premium = [
        await conn.fetchval(
            "INSERT INTO ticket_types (event_id, name, price_cents, quota, taken)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING id", event, name, price, quota, taken,
        )
        for name, price, quota, taken in (("Standard", 1000, 2, 2), ("Premium", 5000, None, 1))
    ]
    booking = await conn.fetchval(
        "INSERT INTO bookings (event_id, user_id, quantity, total_cents)"
        " VALUES ($1, $2, 2, 2000) RETURNING id", event, buyer,
    )
    await conn.execute("INSERT INTO booking_items (booking_id, ticket_type_id, quantity,"
                       " price_cents) VALUES ($1, $2, 2, 1000)", booking, standard)
    hold = await conn.fetchval(
        "INSERT INTO holds (event_id, user_id, quantity, total_cents, currency, expires_at)"
        " VALUES ($1, $2, 1, 5000, 'EUR', now() + interval '10 minutes') RETURNING id",
        event, holder,
    )
    await conn.execute("INSERT INTO hold_items (hold_id, ticket_type_id, quantity,"
                       " price_cents) VALUES ($1, $2, 1, 5000)", hold, premium)

    assert await db.migrate(conn) == ["0004_waitlist", "0005_webhooks"]

    types = await conn.fetch("SELECT id, taken, reserved, waiting, waitlist_allow_skip"
                             " FROM ticket_types ORDER BY price_cents")
    assert [tuple(row) for row in types] == [(standard, 2, 0, 0, False),
                                             (premium, 1, 0, 0, False)]
    await assert_consistent(conn)

    assert await conn.fetchval("SELECT outcome FROM confirm_hold($1, $2, NULL, 'r')",
                               hold, holder) == "confirmed"
    assert await conn.fetchval("SELECT outcome FROM join_waitlist($1, $2, $3, 2)",
                               event, standard, waiter) == "created"
    assert await conn.fetchval("SELECT outcome FROM cancel_booking($1, $2, 'r')",
                               booking, buyer) == "cancelled"
    offer = await conn.fetchrow(
        "SELECT w.status, h.user_id, h.quantity, h.total_cents FROM waitlist_entries w"
        " JOIN holds h ON h.id = w.hold_id WHERE w.user_id = $1", waiter,
    )
    assert tuple(offer) == ("offered", waiter, 2, 2000)
    assert await conn.fetchval("SELECT available_tickets FROM events WHERE id = $1", event) == 0
    await assert_consistent(conn)


async def assert_consistent(conn: asyncpg.Connection) -> None:
    """What `eventbook check` verifies of tickets and waiting lists finds nothing."""
    report = await consistency_report(conn, 3600, 3600)
    assert {kind: rows for kind, rows in report.items() if rows} == {}
