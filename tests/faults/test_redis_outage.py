"""Redis stopped for seconds while customers book through a real `eventbook serve`."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import asyncpg

from eventbook.config import Config
from eventbook.embedded import EmbeddedServices
from tests.client import eventually
from tests.faults.conftest import Processes
from tests.faults.invariants import (
    assert_confirmed_once,
    assert_settled,
)
from tests.faults.load import Answer, book, call, created, seed_accounts, seed_events
from tests.processes import environment

REDIS_DOWN_SECONDS = 5


async def test_bookings_taken_while_redis_is_down_are_each_confirmed_once_it_is_back(
    config: Config, pool: asyncpg.Pool, private: EmbeddedServices, processes: Processes
) -> None:
    """While Redis is stopped, bookings are still taken (201: the booking and its outbox
    row are in PostgreSQL, and the rate limiter lets requests through), /readyz answers
    503 naming Redis and /healthz stays 200. Once Redis is back, with no restart, every
    booking answered 201 (before, during and after the outage) gets exactly one
    booking_confirmed mail, stamped sent, and confirmation_status 'sent'; every stream
    message is handled; `eventbook check` finds nothing."""
    config = config.replace(redis_url=private.start_redis(), booking_rate=5, claim_idle_ms=1000)
    server = processes.serve(environment(config))
    customers = await seed_accounts(pool, config, 80)
    [event] = await seed_events(pool, 1000)
    await server.wait_ready()

    async with aiohttp.ClientSession() as session:
        before = [await book(session, server.url, customer, event) for customer in customers[:5]]
        assert [answer.status for answer in before] == [201] * 5

        private.stop_redis()
        bookings: list[Answer] = []
        readiness: list[Answer] = []
        liveness: list[Answer] = []
        deadline = time.monotonic() + REDIS_DOWN_SECONDS

        async def keep_booking() -> None:
            for customer in customers[5:75]:
                if time.monotonic() > deadline:
                    return
                bookings.append(await book(session, server.url, customer, event))
                await asyncio.sleep(0.05)

        async def keep_probing() -> None:
            while time.monotonic() < deadline:
                readiness.append(await call(session, "GET", f"{server.url}/readyz"))
                liveness.append(await call(session, "GET", f"{server.url}/healthz"))
                await asyncio.sleep(0.25)

        await asyncio.gather(keep_booking(), keep_probing())
        private.start_redis()

        assert len(bookings) >= 20, "too few bookings during the outage to prove anything"
        assert {answer.status for answer in bookings} == {201}, bookings
        assert max(answer.seconds for answer in bookings) < 2.5
        assert {answer.status for answer in liveness} == {200}
        assert {answer.status for answer in readiness} == {503}
        assert {answer.content_type for answer in readiness} == {"application/problem+json"}
        assert {(a.body["code"], a.body["checks"]["redis"]) for a in readiness} == {
            ("not_ready", "down")
        }

        async def ready() -> bool:
            return (await call(session, "GET", f"{server.url}/readyz")).status == 200

        await eventually(ready, timeout=30)
        after = [await book(session, server.url, customer, event) for customer in customers[75:]]
        assert [answer.status for answer in after] == [201] * 5

    answered = created(before + bookings + after)
    await assert_confirmed_once(pool, answered)
    assert server.stop() == 0
    assert_settled(config)
