"""A worker killed with SIGKILL in the middle of sending confirmations.

The same fault in the middle of a fan-out to 10,000 attendees is
tests/test_fanout.py::test_a_worker_killed_mid_fanout_resumes_and_tells_everyone_once.
"""

from __future__ import annotations

import signal
import uuid

import asyncpg

from eventbook.config import Config
from tests.client import eventually
from tests.faults.conftest import Processes
from tests.faults.invariants import (
    all_confirmed,
    assert_each_confirmed_once,
    assert_settled,
    queues,
    wait_until_drained,
)
from tests.faults.load import seed_accounts, seed_events
from tests.processes import environment

BOOKINGS = 300


async def book_in_sql(
    pool: asyncpg.Pool, event: uuid.UUID, users: list[uuid.UUID]
) -> list[uuid.UUID]:
    """Bookings made as the HTTP handler makes them (book_tickets: the booking and its
    outbox row in one transaction), without a server."""
    made = []
    for user in users:
        row = await pool.fetchrow(
            "SELECT outcome, id FROM book_tickets(ARRAY[$1::uuid], ARRAY[$2::uuid], '{f}',"
            " '{1}', '{NULL}', '{fp}', ARRAY[$3], '{NULL}', '{1}', 600, NULL)",
            event, user, f"crash-{user}",
        )
        assert row["outcome"] == "created"
        made.append(row["id"])
    return made


async def sent(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval(
        "SELECT count(*) FROM bookings WHERE confirmation_status = 'sent'"
    ))


async def test_a_worker_killed_mid_confirmations_leaves_every_booking_confirmed_once(
    config: Config, pool: asyncpg.Pool, processes: Processes
) -> None:
    """A worker is SIGKILLed while it sends a backlog of confirmations through a slow
    mail server, mails in flight, acknowledgements outstanding. A new worker claims what
    the dead one left pending: every booking ends with exactly one booking_confirmed
    mail, recorded and stamped sent (a mail in flight at the kill may have been handed
    to the mail server twice; it is recorded once), every stream message is handled and
    acknowledged, none is dead-lettered, and `eventbook check` finds nothing."""
    config = config.replace(claim_idle_ms=1000)
    customers = await seed_accounts(pool, config, BOOKINGS)
    [event] = await seed_events(pool, BOOKINGS)
    bookings = await book_in_sql(pool, event, [customer.id for customer in customers])
    env = environment(config, EVENTBOOK_MAIL_LATENCY_MS="200")

    first = processes.worker(env, name="killed")
    await eventually(lambda: _at_least(pool, 40), timeout=60)
    first.stop(signal.SIGKILL)
    done_before = await sent(pool)
    assert done_before < BOOKINGS, "the kill came too late to leave work behind"
    [left] = [row for row in queues(config) if row["group"] == "confirmations"]
    assert left["pending"] > 0, "nothing was in hand at the kill"

    second = processes.worker(env, name="restarted")
    await eventually(lambda: all_confirmed(pool, bookings), timeout=60, interval=0.2)
    await wait_until_drained(config)
    assert second.stop() == 0
    assert "message_claimed" in second.output
    await assert_each_confirmed_once(pool, bookings)
    assert_settled(config)


async def _at_least(pool: asyncpg.Pool, count: int) -> bool:
    return await sent(pool) >= count
