"""PostgreSQL, Redis or the mail server gone for seconds while customers book through the
Procfile's processes (`serve --no-actors` and `worker`); and a PostgreSQL that hangs."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable

import aiohttp
import asyncpg
import pytest

from eventbook.config import Config
from eventbook.embedded import EmbeddedServices
from tests.client import eventually
from tests.faults.conftest import MailServer, Processes
from tests.faults.invariants import all_confirmed, assert_confirmed_once, assert_settled
from tests.faults.load import Answer, book, call, created, seed_accounts, seed_events
from tests.processes import environment

OUTAGE_SECONDS = 6


def outage(
    dependency: str, private: EmbeddedServices, mail_server: MailServer
) -> tuple[Callable[[], object], Callable[[], object]]:
    """How to take `dependency` away and bring it back."""
    if dependency == "postgres":
        return private.stop_postgres, private.start_postgres
    if dependency == "redis":
        return private.stop_redis, private.start_redis
    return mail_server.stop, mail_server.start


@pytest.mark.parametrize("dependency", ["postgres", "redis", "mail"])
async def test_after_an_outage_every_booking_is_confirmed_once_and_nothing_dead_letters(
    dependency: str, private_world: tuple[Config, asyncpg.Pool], private: EmbeddedServices,
    processes: Processes, mail_server: MailServer,
) -> None:
    """Bookings arrive steadily before, during and after the outage. Afterwards every
    booking answered 201 has exactly one confirmation, recorded and sent; no message
    was dead-lettered (two attempts allowed, so an outage counted against a message
    would show); `eventbook check` finds nothing. Prints how long after the dependency
    came back the last confirmation was sent."""
    config, pool = private_world
    env = environment(config, EVENTBOOK_SMTP_URL=mail_server.url, EVENTBOOK_MAX_ATTEMPTS="2")
    web = processes.serve(env, "--no-actors", name="web")
    worker = processes.worker(env)
    customers = await seed_accounts(pool, config, 100)
    [event] = await seed_events(pool, 100_000)
    await web.wait_ready()
    await asyncio.to_thread(worker.wait_for_output, "worker_running")
    take_away, bring_back = outage(dependency, private, mail_server)

    answers: list[Answer] = []
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:

        async def keep_booking() -> None:
            for customer in itertools.cycle(customers):
                if stop.is_set():
                    return
                answers.append(await book(session, web.url, customer, event))
                await asyncio.sleep(0.03)

        booking = asyncio.create_task(keep_booking())
        try:
            await asyncio.sleep(1.5)
            await asyncio.to_thread(take_away)
            await asyncio.sleep(OUTAGE_SECONDS)
            await asyncio.to_thread(bring_back)
            back = time.monotonic()
            # The lag after the outage: until every booking made before the server came
            # back is confirmed, while bookings go on arriving.
            backlog = created(answers)
            await eventually(lambda: all_confirmed(pool, backlog), timeout=60, interval=0.05)
            lag = time.monotonic() - back
            await asyncio.sleep(1)
        finally:
            stop.set()
            await booking

    booked = created(answers)
    assert len(booked) >= 50, answers[-5:]
    assert [a for a in answers if a.status not in (201, 503)] == []
    await assert_confirmed_once(pool, booked)
    print(f"\n{dependency} down {OUTAGE_SECONDS} s: {len(booked)} bookings; the "
          f"{len(backlog)} made before it came back were all confirmed {lag:.2f} s after; "
          f"{len(mail_server.recipients) - len(booked)} mails sent twice")
    assert len(mail_server.recipients) >= len(booked)
    assert web.stop() == 0 and worker.stop() == 0
    assert_settled(config)


def postgres_processes(private: EmbeddedServices) -> list[int]:
    """The postmaster and every backend of the test's PostgreSQL."""
    postmaster = int((private.pgdata / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True,
                              text=True, check=False).stdout.split()
    return [postmaster, *map(int, children)]


async def test_a_hanging_postgres_is_answered_503_within_the_deadline_and_recovered_from(
    private_world: tuple[Config, asyncpg.Pool], private: EmbeddedServices,
    processes: Processes,
) -> None:
    """PostgreSQL frozen (SIGSTOP: it accepts connections and never answers, like a
    frozen host). Every request that needs it is answered 503 within the statement
    deadline plus the connect deadline, never left hanging for the 30 s of old; after
    SIGCONT the same process serves and books again, and every booking answered 201 is
    confirmed once."""
    config, pool = private_world
    server = processes.serve(environment(config))
    customers = await seed_accounts(pool, config, 40)
    [event] = await seed_events(pool, 1000)
    await server.wait_ready()
    deadline = config.db_statement_timeout_seconds + config.db_connect_timeout_seconds + 1.5

    async with aiohttp.ClientSession() as session:
        before = [await book(session, server.url, c, event) for c in customers[:5]]
        assert {a.status for a in before} == {201}
        frozen = postgres_processes(private)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            traffic: list[Callable[[], Awaitable[Answer]]] = [
                *(lambda c=c: book(session, server.url, c, event) for c in customers[5:25]),
                *(lambda: call(session, "GET", f"{server.url}/api/v1/events/{event}")
                  for _ in range(10)),
                lambda: call(session, "GET", f"{server.url}/readyz"),
            ]
            hung = await asyncio.gather(*(request() for request in traffic))
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)

        assert [a for a in hung if a.status is None] == []
        assert {a.status for a in hung} == {503}, hung
        slowest = max(hung, key=lambda a: a.seconds)
        assert slowest.seconds < deadline, slowest
        print(f"\nfrozen PostgreSQL: {len(hung)} requests, all 503, slowest "
              f"{slowest.seconds:.2f} s (deadline {deadline:.1f} s)")

        async def ready() -> bool:
            return (await call(session, "GET", f"{server.url}/readyz")).status == 200

        await eventually(ready, timeout=30)
        after = [await book(session, server.url, c, event) for c in customers[25:30]]
        assert {a.status for a in after} == {201}

    booked = created(before + after)
    await assert_confirmed_once(pool, booked)
    assert server.stop() == 0
    assert_settled(config)
