"""The server through pgbouncer in transaction mode: bookings, the hot event, the actors
and migrate as they run against PostgreSQL itself, the settings each pool gives its
statements, and no session state left on the pooler's server connections."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from eventbook import connections, db
from eventbook.cli import migrate_database
from eventbook.config import Config, ConfigError
from tests.client import Api, expect
from tests.conftest import with_database
from tests.pgbouncer.conftest import POOL_SIZE
from tests.test_actors_confirmations import (  # noqa: F401
    test_a_cancelled_booking_gets_a_cancellation_mail_too,
)
from tests.test_bookings import (  # noqa: F401
    test_a_booking_writes_one_confirmation_with_its_request_id,
    test_a_customer_books_tickets,
    test_a_retry_with_the_same_key_returns_the_same_booking,
    test_a_sold_out_event_refuses_the_next_booking,
    test_cancelling_a_booking_gives_its_tickets_back,
)
from tests.test_events import (  # noqa: F401
    test_a_search_past_the_search_timeout_is_stopped_as_too_broad,
)
from tests.test_hot_event import (  # noqa: F401
    test_400_simultaneous_bookings_of_one_event_sell_exactly_the_capacity,
    test_a_booking_that_breaks_its_batch_fails_alone,
)
from tests.test_waitlist import (  # noqa: F401
    cancel,
    join,
    sold_out_event,
    test_cancelled_tickets_are_offered_to_the_first_in_line_not_sold_again,
)


async def test_concurrent_statements_share_the_server_connections_without_mixing_up(
    config: Config,
) -> None:
    # A thousand statements queue for 20 connections, themselves queued for 4 of the
    # server's: what is checked is each answer, not how long a loaded machine takes.
    patient = config.replace(db_acquire_timeout_seconds=60, db_statement_timeout_seconds=60)
    pool = await connections.create_config_pool(patient, 20, 20)
    try:
        async def echo(n: int) -> tuple[int, str]:
            row = await pool.fetchrow(
                "SELECT $1::int AS n, current_setting('eventbook.waitlist_offer_seconds') AS s",
                n,
            )
            assert row is not None
            return row["n"], row["s"]

        answers = await asyncio.gather(*(echo(n) for n in range(1000)))
        assert answers == [(n, str(config.waitlist_offer_seconds)) for n in range(1000)]
        used = await pool.fetchval("SELECT count(*) FROM pg_stat_activity"
                                   " WHERE datname = current_database()")
        assert used <= POOL_SIZE
    finally:
        await pool.close()


async def test_the_pools_settings_stay_in_their_transactions(config: Config) -> None:
    """A session SET would stay on the server connection the next client gets."""
    pool = await connections.create_config_pool(config, 10, 10)
    plain = await connections.create_pool(config.database_url or "", 10, 10, pooler=True)
    try:
        await asyncio.gather(*(pool.fetchval("SELECT $1::int", n) for n in range(200)))
        async with pool.acquire() as conn, conn.transaction():
            assert await conn.fetchval(
                "SELECT current_setting('eventbook.waitlist_offer_seconds')"
            ) == str(config.waitlist_offer_seconds)
        seen = await asyncio.gather(*(
            plain.fetchval("SELECT current_setting('eventbook.waitlist_offer_seconds', true)")
            for _ in range(200)
        ))
        assert set(seen) <= {None, ""}
    finally:
        await pool.close()
        await plain.close()


async def test_an_offer_lasts_the_configured_time_through_the_pooler(
    make_api: Callable[..., Awaitable[Api]],
) -> None:
    api = await make_api(waitlist_offer_seconds=600)
    organizer, customer, waiting = (
        await api.register(role="organizer"), await api.register(), await api.register()
    )
    event, booking = await sold_out_event(api, organizer, customer, capacity=1)
    entry = await join(api, waiting, event)
    await cancel(api, customer, booking)

    offered = await api.waitlist_entry(waiting, entry)
    assert offered["status"] == "offered"
    hold = await expect(await api.get(f"/api/v1/holds/{offered['hold_id']}", waiting), 200)
    lasts = dt.datetime.fromisoformat(hold["expires_at"]) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(seconds=590) < lasts <= dt.timedelta(seconds=600)


async def test_concurrent_migrates_through_the_pooler_apply_each_migration_once(
    servers, pgbouncer, config: Config,
) -> None:
    name = "test_pooler_migrations_race"
    admin = await asyncpg.connect(servers.database_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        direct = with_database(servers.database_url, name)
        racing = config.replace(database_url=pgbouncer.url(direct), database_direct_url=direct)
        results = await asyncio.gather(*(migrate_database(racing) for _ in range(6)))
        applied = sorted(name for result in results for name in result)
        assert applied == sorted(migration for migration, _ in db.migrations())
        assert await migrate_database(racing) == []
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def test_the_pooler_needs_the_direct_url_of_the_server() -> None:
    env = {"DATABASE_URL": "postgresql://app@pgbouncer:6432/eventbook",
           "JWT_SECRET": "s" * 32, "EVENTBOOK_DB_POOLER": "transaction"}
    with pytest.raises(ConfigError, match="needs DATABASE_DIRECT_URL"):
        Config.from_env(env)
    direct = "postgresql://app@db:5432/eventbook"
    config = Config.from_env({**env, "DATABASE_DIRECT_URL": direct})
    assert (config.database_url, config.direct_url) == (env["DATABASE_URL"], direct)
    without = Config.from_env({**env, "EVENTBOOK_DB_POOLER": "none"})
    assert without.direct_url == env["DATABASE_URL"]
