"""The holds actor gives a hold's tickets back when it runs out: on time, once, and
through PostgreSQL trouble."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from typing import Any

import asyncpg
import structlog

from eventbook import connections
from eventbook.actors.holds import Holds
from eventbook.check import consistency_report
from eventbook.config import Config
from eventbook.metrics import Metrics
from tests.client import Api, eventually, expect
from tests.seed import insert_holds

# The promise: a hold's tickets are bookable again within about a second of expires_at.
BACK_WITHIN = 1.5


def expired_count(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("eventbook_holds_total", {"event": "expired"}) or 0


async def live_holds(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM holds WHERE status = 'held'"))


async def no_live_holds(pool: asyncpg.Pool) -> bool:
    return await live_holds(pool) == 0


async def assert_ticket_counts_add_up(pool: asyncpg.Pool) -> None:
    """`eventbook check` finds every event's and type's count equal to its confirmed
    bookings plus live holds."""
    async with pool.acquire() as conn:
        report = await consistency_report(conn, 3600, 3600)
    assert (report["ticket_counts"], report["ticket_type_counts"]) == ([], [])


async def test_a_holds_tickets_are_bookable_again_within_a_second_of_expires_at(
    holds_api: Api, pool: asyncpg.Pool
) -> None:
    api = holds_api
    organizer = await api.register(role="organizer")
    holder, buyer = await api.seed_users(pool, 2)
    event = await api.create_event(organizer, capacity=2)
    held = await expect(await api.hold(holder, event, quantity=2), 201)
    assert (await expect(await api.book(buyer, event), 409))["code"] == "sold_out"
    expires_at = dt.datetime.fromisoformat(held["expires_at"]).timestamp()

    while (await api.get_event(event))["available_tickets"] == 0:
        assert time.time() < expires_at + 10, "the tickets never came back"
        await asyncio.sleep(0.01)
    back = time.time()

    assert expires_at <= back <= expires_at + BACK_WITHIN, back - expires_at
    await expect(await api.book(buyer, event, quantity=2), 201)
    row = await pool.fetchrow("SELECT status, ended_at, expires_at FROM holds")
    assert row["status"] == "expired"
    assert row["expires_at"] <= row["ended_at"]


async def test_two_holds_actors_expire_each_due_hold_exactly_once(
    api: Api, organizer: Any, pool: asyncpg.Pool
) -> None:
    """Two actors over the same pool wake for the same 400 holds of four events, all
    falling due in the same instant, and share them in small batches: each hold expires
    once, the actors' counts add up to exactly 400, and every ticket is back."""
    customers = [uuid.UUID(c.id) for c in await api.seed_users(pool, 100)]
    events = [await api.create_event(organizer, capacity=150) for _ in range(4)]
    vip = await api.add_ticket_type(organizer, events[0], name="VIP", quota=100)
    held = [
        *await insert_holds(pool, events[0]["id"], customers, 1, ticket_type_id=vip["id"]),
        *[hold for event in events[1:]
          for hold in await insert_holds(pool, event["id"], customers, 1)],
    ]
    assert len(held) == 400

    metrics = [Metrics(), Metrics()]
    actors = [Holds(pool, m, batch_size=20) for m in metrics]
    stopping = asyncio.Event()
    running = [asyncio.create_task(actor.run(stopping)) for actor in actors]
    try:
        await eventually(lambda: no_live_holds(pool), timeout=20)
    finally:
        stopping.set()
        await asyncio.gather(*running)

    assert sum(expired_count(m) for m in metrics) == 400
    ended = await pool.fetch("SELECT status, ended_at >= expires_at AS on_time FROM holds")
    assert [(row["status"], row["on_time"]) for row in ended] == [("expired", True)] * 400
    for event in events:
        assert (await api.get_event(event))["available_tickets"] == 150
    assert [t["available_tickets"] for t in await api.ticket_types(events[0])] == [150, 100]
    await assert_ticket_counts_add_up(pool)


async def test_the_holds_actor_waits_out_postgres_trouble_and_expires_after(
    api: Api, organizer: Any, config: Config, pool: asyncpg.Pool
) -> None:
    """The actor's connections are cut, and the database refuses writes (as a primary
    demoted to a standby does) past the holds' expiry: the actor neither crashes nor
    expires anything meanwhile; once PostgreSQL takes writes again, the same actor,
    not restarted, expires every hold once."""
    assert config.database_url is not None
    customers = [uuid.UUID(c.id) for c in await api.seed_users(pool, 5)]
    event = await api.create_event(organizer, capacity=10)
    database = await pool.fetchval("SELECT current_database()")
    actor_pool = await connections.create_pool(
        config.database_url, 1, 2, server_settings={"application_name": "holds-under-test"}
    )
    metrics = Metrics()
    stopping = asyncio.Event()

    async def cut_the_actors_connections() -> None:
        await pool.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'holds-under-test'"
        )

    with structlog.testing.capture_logs() as logs:
        running = asyncio.create_task(Holds(actor_pool, metrics).run(stopping))
        try:
            await pool.execute(
                f'ALTER DATABASE "{database}" SET default_transaction_read_only = on'
            )
            await cut_the_actors_connections()
            await insert_holds(pool, event["id"], customers, 1, quantity=2)
            await eventually(lambda: any(
                line["event"] == "holds_waiting_for_postgres" for line in logs
            ))
            await asyncio.sleep(2)  # the holds are due meanwhile
            assert await live_holds(pool) == 5
            assert (await api.get_event(event))["available_tickets"] == 0

            await pool.execute(f'ALTER DATABASE "{database}" RESET default_transaction_read_only')
            # Its sessions opened meanwhile are read-only for life.
            await cut_the_actors_connections()
            await eventually(lambda: no_live_holds(pool), timeout=15)
            assert not running.done()
        finally:
            stopping.set()
            await running
            await actor_pool.close()

    assert running.exception() is None
    assert expired_count(metrics) == 5
    assert (await api.get_event(event))["available_tickets"] == 10
    events = [line["event"] for line in logs]
    assert "dependencies_available" in events
    await assert_ticket_counts_add_up(pool)


async def test_a_hold_runs_out_on_time_while_another_events_row_is_held_by_a_long_change(
    holds_api: Api, pool: asyncpg.Pool
) -> None:
    """An organizer's change holds one event's row for seconds: a hold of another event
    still gives its tickets back within a second of its expires_at, and the locked
    event's hold as soon as its row is free."""
    api = holds_api
    organizer = await api.register(role="organizer")
    holder, other = await api.seed_users(pool, 2)
    locked, free = [await api.create_event(organizer, capacity=1) for _ in range(2)]
    await expect(await api.hold(holder, locked), 201)
    held = await expect(await api.hold(other, free), 201)
    expires_at = dt.datetime.fromisoformat(held["expires_at"]).timestamp()

    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT FROM events WHERE id = $1::uuid FOR UPDATE", locked["id"])
        while (await api.get_event(free))["available_tickets"] == 0:
            assert time.time() < expires_at + BACK_WITHIN, "the free event's hold is late"
            await asyncio.sleep(0.01)
        await asyncio.sleep(expires_at + 3 - time.time())
        assert (await api.get_event(locked))["available_tickets"] == 0
    await eventually(lambda: no_live_holds(pool), timeout=BACK_WITHIN)
    await assert_ticket_counts_add_up(pool)
