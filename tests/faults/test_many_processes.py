"""Two `web` and two `worker` processes at once, under load, on one hot event."""

from __future__ import annotations

import asyncio
import functools
import random
import uuid
from collections import Counter

import aiohttp
import asyncpg

from eventbook.config import Config
from tests.client import eventually
from tests.faults.conftest import Processes
from tests.faults.invariants import (
    all_confirmed,
    assert_each_confirmed_once,
    assert_settled,
)
from tests.faults.load import Answer, book, call, run_clients, seed_accounts, seed_events
from tests.processes import environment

HOT_CAPACITY = 150
REQUESTS = 600
CANCELLED = 20


async def mails(pool: asyncpg.Pool, kind: str, **where: object) -> Counter[tuple[object, ...]]:
    """Mails of `kind` sent, counted per key: booking for booking mails, (user, version)
    for event mails."""
    key = "booking_id" if kind.startswith("booking_") else "user_id, event_version"
    filters = "".join(f" AND {column} = ${n}" for n, column in enumerate(where, start=2))
    rows = await pool.fetch(
        f"SELECT {key} FROM notifications WHERE kind = $1 AND sent_at IS NOT NULL{filters}",
        kind, *where.values(),
    )
    return Counter(tuple(row.values()) for row in rows)


async def test_two_web_and_two_worker_processes_neither_oversell_nor_mail_twice(
    config: Config, pool: asyncpg.Pool, processes: Processes
) -> None:
    """Two `serve --no-actors` and two `worker` processes share one database and one
    Redis. Customers book through both web processes at once, mostly one hot event with
    far more demand than tickets. Then some cancel, and another event changes. Holds:
    the hot event sells exactly its capacity, never more (201s add up to it, the rest
    are 409 sold_out, the database agrees); every other answer is 201; no message is
    handled into two effects: one booking_confirmed mail per booking, one
    booking_cancelled per cancellation, one event_updated per attendee of the changed
    event, though two relays and two consumers of each group ran; every stream message
    is handled; `eventbook check` finds nothing."""
    config = config.replace(claim_idle_ms=2000)
    env = environment(config)
    webs = [processes.serve(env, "--no-actors", name=f"web{n}") for n in range(2)]
    for n in range(2):
        processes.worker(env, name=f"worker{n}")
    customers = await seed_accounts(pool, config, 300)
    [organizer] = await seed_accounts(pool, config, 1, role="organizer")
    hot, *quiet = await seed_events(pool, HOT_CAPACITY, 1000, 1000, 1000, organizer=organizer.id)
    await asyncio.gather(*(web.wait_ready() for web in webs))
    for worker in processes.started[2:]:
        await asyncio.to_thread(worker.wait_for_output, "worker_running")

    rng = random.Random(9)
    plan = [
        (customers[n % len(customers)], hot, rng.randint(1, 4)) if n % 3
        else (customers[n % len(customers)], quiet[n % len(quiet)], 1)
        for n in range(REQUESTS)
    ]
    async with aiohttp.ClientSession() as session:
        answers = await run_clients(24, [
            functools.partial(book, session, webs[n % 2].url, *planned)
            for n, planned in enumerate(plan)
        ])
        refused = {(event, answer.status, answer.body["code"])
                   for (_, event, _), answer in zip(plan, answers, strict=True)
                   if answer.status != 201}
        assert refused == {(hot, 409, "sold_out")}
        made = {answer.booking_id: answer.body for answer in answers if answer.status == 201}
        hot_sold = sum(b["quantity"] for b in made.values() if b["event_id"] == str(hot))
        assert hot_sold == HOT_CAPACITY
        assert await pool.fetchval(
            "SELECT available_tickets FROM events WHERE id = $1", hot
        ) == 0

        by_id = {str(customer.id): customer for customer in customers}
        cancelled = list(made.values())[:CANCELLED]
        cancels: list[Answer] = await asyncio.gather(*(
            call(session, "POST", f"{webs[n % 2].url}/api/v1/bookings/{booking['id']}/cancel",
                 customer=by_id[booking["user_id"]])
            for n, booking in enumerate(cancelled)
        ))
        assert {answer.status for answer in cancels} == {200}
        changed = quiet[0]
        change = await call(session, "PATCH", f"{webs[0].url}/api/v1/events/{changed}",
                            customer=organizer, json={"title": "Moved to the big hall"})
        assert change.status == 200 and change.body["version"] == 2

    attendees = {row["user_id"] for row in await pool.fetch(
        "SELECT user_id FROM bookings WHERE event_id = $1 AND status = 'confirmed'", changed
    )}

    async def announced() -> bool:
        return bool(await pool.fetchval(
            "SELECT finished_at IS NOT NULL FROM announcements"
            " WHERE event_id = $1 AND version = 2", changed,
        ))

    await eventually(lambda: all_confirmed(pool, list(made)), timeout=60, interval=0.2)
    await eventually(announced, timeout=60, interval=0.2)
    cancellation_ids = {uuid.UUID(booking["id"]) for booking in cancelled}

    async def cancellations_sent() -> bool:
        return set(await mails(pool, "booking_cancelled")) == {(b,) for b in cancellation_ids}

    await eventually(cancellations_sent, timeout=30)
    for process in processes.started:
        assert process.stop() == 0

    await assert_each_confirmed_once(pool, list(made))
    assert await mails(pool, "booking_cancelled") == Counter(
        (booking,) for booking in cancellation_ids
    )
    assert await mails(pool, "event_updated", event_id=changed) == Counter(
        (user, 2) for user in attendees
    )
    assert_settled(config)

