"""PostgreSQL stopped under a real `eventbook serve` while requests keep arriving."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import asyncpg
import pytest

from eventbook import connections, db
from eventbook.config import Config
from eventbook.embedded import EmbeddedServices
from tests.client import eventually
from tests.conftest import Servers, base_config
from tests.faults.conftest import Processes
from tests.faults.invariants import assert_confirmed_once, assert_settled
from tests.faults.load import Account, Answer, book, call, created, seed_accounts, seed_events
from tests.processes import environment

POSTGRES_DOWN_SECONDS = 4
# An answer "well under a few seconds": a client's retry, not a hang.
PROMPT = 2.5


@pytest.fixture
async def private_database(
    private: EmbeddedServices, servers: Servers
) -> AsyncIterator[tuple[Config, asyncpg.Pool]]:
    """A migrated database on a PostgreSQL of this test alone, its config and a pool."""
    # start_postgres runs an event loop of its own: not on this one.
    database_url = await asyncio.to_thread(private.start_postgres)
    config = base_config(database_url, servers.redis_url, claim_idle_ms=1000)
    assert config.database_url is not None
    conn = await asyncpg.connect(config.database_url)
    try:
        await db.migrate(conn)
    finally:
        await conn.close()
    pool = await connections.create_pool(config.database_url, 1, 3)
    yield config, pool
    await pool.close()


async def test_requests_get_a_prompt_503_while_postgres_is_down_and_the_server_recovers(
    private_database: tuple[Config, asyncpg.Pool], private: EmbeddedServices,
    processes: Processes,
) -> None:
    """While PostgreSQL stops and stays down, every request that needs it is answered
    promptly (each well under a few seconds) with a 503 problem, never a 500 and never
    a hang or a dropped connection; /healthz stays 200 and /readyz is 503 naming
    PostgreSQL. When PostgreSQL is back, the same process (no restart) is ready again and
    books again, and every booking answered 201 before, during or after the outage gets
    exactly one confirmation; `eventbook check` finds nothing."""
    config, pool = private_database
    # The logins below all come from 127.0.0.1: no rate limit in the way of the outage.
    server = processes.serve(environment(
        config, EVENTBOOK_LOGIN_LIMIT="1000000", EVENTBOOK_LOGIN_IP_LIMIT="1000000"
    ))
    customers = await seed_accounts(pool, config, 50)
    [event] = await seed_events(pool, 1000)
    await server.wait_ready()
    pid = server.proc.pid
    url = server.url

    async with aiohttp.ClientSession() as session:
        traffic: list[Callable[[Account], Awaitable[Answer]]] = [
            lambda customer: book(session, url, customer, event),
            lambda customer: call(session, "GET", f"{url}/api/v1/events"),
            lambda customer: call(session, "GET", f"{url}/api/v1/events/{event}"),
            lambda customer: call(session, "GET", f"{url}/api/v1/bookings", customer=customer),
            lambda customer: call(session, "GET", f"{url}/api/v1/me/notifications",
                                  customer=customer),
            lambda customer: call(session, "POST", f"{url}/api/v1/auth/login",
                                  json={"email": "someone@example.com", "password": "secret"}),
        ]
        answers: list[Answer] = []
        stop = asyncio.Event()
        customer = itertools.cycle(customers[:-5])

        async def client(n: int) -> None:
            while not stop.is_set():
                answers.append(await traffic[n % len(traffic)](next(customer)))
                await asyncio.sleep(0.05)

        async def probe() -> None:
            while not stop.is_set():
                answers.append(await call(session, "GET", f"{url}/readyz"))
                answers.append(await call(session, "GET", f"{url}/healthz"))
                await asyncio.sleep(0.2)

        clients = [asyncio.create_task(client(n)) for n in range(len(traffic))]
        clients.append(asyncio.create_task(probe()))
        try:
            await asyncio.sleep(0.5)
            # Stopped under load: some requests are in flight when the server goes away.
            await asyncio.to_thread(private.stop_postgres)
            went_down = time.monotonic()
            await asyncio.sleep(POSTGRES_DOWN_SECONDS)
            came_back = time.monotonic()
            await asyncio.to_thread(private.start_postgres)

            async def ready() -> bool:
                return (await call(session, "GET", f"{url}/readyz")).status == 200

            await eventually(ready, timeout=30)
            await asyncio.sleep(0.5)
        finally:
            stop.set()
            await asyncio.gather(*clients)

        recovered = [await book(session, url, customer, event) for customer in customers[-5:]]
        assert [answer.status for answer in recovered] == [201] * 5
    assert server.proc.poll() is None and server.proc.pid == pid, "the server restarted"

    assert [a for a in answers if a.status is None] == [], "a request got no answer"
    assert [a for a in answers if a.status is not None and a.status >= 500
            and a.status != 503] == []
    slowest = max(answers, key=lambda answer: answer.seconds)
    assert slowest.seconds < PROMPT, slowest
    down = [answer for answer in answers if answer.within(went_down, came_back)]
    assert len(down) >= 50, "too few requests while the database was down"
    health = [a for a in down if a.body == {"status": "ok"}]
    assert health and {a.status for a in health} == {200}
    refused = [a for a in down if a not in health]
    assert {a.status for a in refused} == {503}, refused
    assert {a.content_type for a in refused} == {"application/problem+json"}
    assert {a.body["code"] for a in refused} == {"service_unavailable", "not_ready"}
    assert {a.body["checks"]["postgres"] for a in refused if a.body["code"] == "not_ready"} \
        == {"down"}

    booked = created(answers + recovered)
    await assert_confirmed_once(pool, booked)
    assert server.stop() == 0
    assert_settled(config)
