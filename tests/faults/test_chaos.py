"""Chaos: bookings keep arriving while a driver restarts Redis, restarts PostgreSQL and
SIGKILLs the worker at random moments.

Half a minute by default; EVENTBOOK_CHAOS_SECONDS runs it longer (a soak), and
EVENTBOOK_CHAOS_SEED replays one run's choices.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import time
from collections.abc import Callable

import aiohttp
import asyncpg
import pytest

from eventbook.config import Config
from eventbook.embedded import EmbeddedServices
from tests.client import eventually
from tests.faults.conftest import Processes
from tests.faults.invariants import assert_confirmed_once, assert_settled, wait_until_drained
from tests.faults.load import Answer, book, created, seed_accounts, seed_events
from tests.processes import Process, environment

CHAOS_SECONDS = float(os.environ.get("EVENTBOOK_CHAOS_SECONDS", "30"))
SEED = int(os.environ.get("EVENTBOOK_CHAOS_SEED", str(random.randrange(1 << 30))))


class Worker:
    """The worker as a process manager keeps it: replaced whenever it is gone."""

    def __init__(self, processes: Processes, env: dict[str, str]) -> None:
        self.processes = processes
        self.env = env
        self.current: Process | None = None
        self.started = 0

    def ensure_running(self) -> None:
        if self.current is None or self.current.proc.poll() is not None:
            self.current = self.processes.worker(self.env, name=f"worker{self.started}")
            self.started += 1

    def kill(self) -> None:
        if self.current is not None:
            self.current.send(signal.SIGKILL)
            self.current.proc.wait(10)


@pytest.mark.timeout(CHAOS_SECONDS + 240)
async def test_chaos_every_booking_is_confirmed_once_and_every_invariant_holds(
    private_world: tuple[Config, asyncpg.Pool], private: EmbeddedServices,
    processes: Processes,
) -> None:
    config, pool = private_world
    rng = random.Random(SEED)
    env = environment(config)
    web = processes.serve(env, "--no-actors", name="web")
    worker = Worker(processes, env)
    worker.ensure_running()
    customers = await seed_accounts(pool, config, 200)
    events = await seed_events(pool, 100_000, 100_000)
    await web.wait_ready()

    answers: list[Answer] = []
    done: list[str] = []
    stop = asyncio.Event()
    started = time.monotonic()

    def note(what: str) -> None:
        done.append(f"{time.monotonic() - started:6.1f} s  {what}")

    async def restart(
        what: str, stop_it: Callable[[], object], start_it: Callable[[], object]
    ) -> None:
        down = rng.uniform(0.5, 4.0)
        note(f"{what} stopped for {down:.1f} s")
        await asyncio.to_thread(stop_it)
        await asyncio.sleep(down)
        await asyncio.to_thread(start_it)

    async def drive() -> None:
        while time.monotonic() - started < CHAOS_SECONDS:
            await asyncio.sleep(rng.uniform(2.0, 6.0))
            worker.ensure_running()
            action = rng.choice(["redis", "postgres", "worker"])
            if action == "redis":
                await restart("Redis", private.stop_redis, private.start_redis)
            elif action == "postgres":
                await restart("PostgreSQL", private.stop_postgres, private.start_postgres)
            else:
                note("worker SIGKILLed")
                worker.kill()
                await asyncio.sleep(rng.uniform(0.2, 2.0))
                worker.ensure_running()

    async with aiohttp.ClientSession() as session:

        async def keep_booking(n: int) -> None:
            for customer in itertools.cycle(customers[n::2]):
                if stop.is_set():
                    return
                answers.append(await book(session, web.url, customer, events[n]))
                await asyncio.sleep(0.02)

        clients = [asyncio.create_task(keep_booking(n)) for n in range(2)]
        try:
            await drive()
        finally:
            stop.set()
            await asyncio.gather(*clients)

    # Whatever the last action was, a worker runs again (it exits when it starts while
    # PostgreSQL is down, as under a process manager).
    await eventually(lambda: (worker.ensure_running(), worker.current is not None
                              and "worker_running" in worker.current.output)[1], timeout=60,
                     interval=1.0)
    booked = created(answers)
    statuses = {answer.status for answer in answers}
    print(f"\nchaos seed {SEED}, {CHAOS_SECONDS:.0f} s, {len(answers)} requests "
          f"({len(booked)} booked, statuses {sorted(statuses, key=str)}), "
          f"{worker.started} workers:\n  " + "\n  ".join(done))
    assert len(booked) >= 100
    assert statuses <= {201, 503}, [a for a in answers if a.status not in (201, 503)][:5]
    await assert_confirmed_once(pool, booked)
    await wait_until_drained(config)
    assert web.stop() == 0
    assert worker.current is not None and worker.current.stop() == 0
    assert_settled(config)
    print(f"  found: all {len(booked)} bookings confirmed once, no dead letter, "
          "eventbook check clean")
