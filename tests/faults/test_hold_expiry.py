"""A worker SIGKILLed while it expires holds, with no holds actor running anywhere else:
after a restart every hold expires, once, and every ticket is back."""

from __future__ import annotations

import asyncio
import json
import signal

import asyncpg

from eventbook.config import Config
from tests.client import eventually
from tests.faults.conftest import Processes
from tests.faults.invariants import assert_check_reports_nothing
from tests.processes import environment
from tests.seed import insert_event, insert_holds, insert_users

EVENTS = 10
HOLDS_PER_EVENT = 1000
# Holds running out while no worker runs, a few seconds after the others.
LATER = 200


async def count(pool: asyncpg.Pool, status: str) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM holds WHERE status = $1", status))


async def some_expired(pool: asyncpg.Pool) -> bool:
    return await count(pool, "expired") > 0


async def none_held(pool: asyncpg.Pool) -> bool:
    return await count(pool, "held") == 0


def expired_in_log(output: str) -> int:
    """The holds a worker's log says it expired."""
    total = 0
    for line in output.splitlines():
        if '"holds_expired"' in line:
            total += json.loads(line)["count"]
    return total


async def test_holds_due_when_a_worker_is_killed_expire_once_after_its_restart(
    config: Config, pool: asyncpg.Pool, processes: Processes
) -> None:
    """10,000 holds over ten events fall due in the same instant under a worker running
    only the holds actor, which is SIGKILLed as soon as it has expired some (a batch of
    them possibly uncommitted); 200 more fall due while no worker runs, and nobody else
    expires them. The restarted worker expires exactly the holds still held, each once:
    every event and ticket type has all its tickets back, and `eventbook check` finds
    nothing."""
    customers = await insert_users(pool, HOLDS_PER_EVENT)
    events = [await insert_event(pool, capacity=HOLDS_PER_EVENT + LATER)
              for _ in range(EVENTS)]
    for event in events:
        await insert_holds(pool, event, customers, 600)
    later = await insert_holds(pool, events[0], customers[:LATER], 600)
    env = environment(config)

    first = processes.worker(env, "--actors", "holds", name="killed")
    first.wait_for_output("worker_running")
    await pool.execute(
        "UPDATE holds SET expires_at = now() + CASE WHEN id = ANY($1::uuid[])"
        " THEN interval '4 seconds' ELSE interval '500 milliseconds' END",
        later,
    )
    await eventually(lambda: some_expired(pool), timeout=30, interval=0.01)
    first.stop(signal.SIGKILL)

    # The later holds fall due with no worker running: they stay held. (A batch the
    # dead worker's connection was running may still have committed meanwhile.)
    await asyncio.sleep(4.5)
    assert await pool.fetchval(
        "SELECT count(*) FROM holds WHERE id = ANY($1::uuid[]) AND status = 'held'"
        " AND expires_at < now()", later,
    ) == LATER
    expired_before = await count(pool, "expired")
    assert expired_before < EVENTS * HOLDS_PER_EVENT, "the kill came too late to leave work"

    second = processes.worker(env, "--actors", "holds", name="restarted")
    await eventually(lambda: none_held(pool), timeout=60, interval=0.1)
    assert second.stop() == 0
    total = EVENTS * HOLDS_PER_EVENT + LATER
    assert expired_in_log(second.output) == total - expired_before
    assert await count(pool, "expired") == total
    assert await pool.fetchval(
        "SELECT count(*) FROM holds WHERE ended_at < expires_at"
    ) == 0
    rows = await pool.fetch(
        "SELECT e.id, e.capacity, e.available_tickets, t.taken FROM events e"
        " JOIN ticket_types t ON t.event_id = e.id WHERE e.id = ANY($1::uuid[])", events,
    )
    assert {(r["capacity"] - r["available_tickets"], r["taken"]) for r in rows} == {(0, 0)}
    assert len(rows) == EVENTS
    assert_check_reports_nothing(config)

