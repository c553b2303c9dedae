"""`eventbook serve --processes 2`: two real server processes on one port, the kernel
spreading the connections, a parent that stops them gracefully and replaces one that
dies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from eventbook.auth import Tokens
from eventbook.config import Config
from tests.processes import Server, environment
from tests.seed import insert_event, insert_users, ledger


def log_lines(server: Server) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.output.splitlines() if line.startswith("{")]


def answered_by(server: Server, route: str) -> Counter[int]:
    """How many requests of `route` each server process logged."""
    return Counter(line["process"] for line in log_lines(server)
                   if line["event"] == "request" and line["route"] == route)


def children(server: Server) -> dict[int, int]:
    """The pid of each server process, the last one started in its slot."""
    return {line["index"]: line["pid"] for line in log_lines(server)
            if line["event"] == "process_started"}


def fresh_connections() -> aiohttp.ClientSession:
    """A client that opens a connection a request: each one the kernel may give to
    either process."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0))


async def until(check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.05)


async def both_answer(server: Server) -> None:
    """Until health checks on fresh connections have reached both processes."""
    async with fresh_connections() as session:
        async def reached_both() -> bool:
            for _ in range(10):
                async with session.get(f"{server.url}/healthz") as answer:
                    assert answer.status == 200
            return set(answered_by(server, "/healthz")) == {0, 1}

        await until(reached_both)


@pytest.fixture
async def two_processes(config: Config, tmp_path: Path) -> AsyncIterator[Server]:
    """`serve --processes 2 --no-actors` on the test's servers, both processes serving."""
    server = Server(environment(config, EVENTBOOK_ARGON2_TIME_COST="10",
                                        EVENTBOOK_ARGON2_MEMORY_KIB="65536"),
                    tmp_path / "serve.log", "--processes", "2", "--no-actors")
    try:
        await server.wait_ready()
        await both_answer(server)
        yield server
    finally:
        server.stop()


async def test_a_hot_event_booked_through_both_processes_sells_exactly_its_capacity(
    two_processes: Server, config: Config, pool: asyncpg.Pool
) -> None:
    event = await insert_event(pool, capacity=300)
    customers = await insert_users(pool, 400)
    assert config.jwt_secret is not None
    tokens = Tokens(config.jwt_secret, config.jwt_issuer, config.jwt_audience, 600)

    async with fresh_connections() as session:
        async def book(customer: uuid.UUID) -> tuple[int, dict[str, Any]]:
            async with session.post(
                f"{two_processes.url}/api/v1/events/{event}/bookings", json={"quantity": 1},
                headers={"Authorization": f"Bearer {tokens.issue(customer, 'customer')}"},
            ) as answer:
                return answer.status, await answer.json()

        answers = await asyncio.gather(*(book(customer) for customer in customers))

    statuses = Counter(status for status, _ in answers)
    assert statuses == {201: 300, 409: 100}
    assert {body["code"] for status, body in answers if status == 409} == {"sold_out"}
    assert await ledger(pool, event) == (300, 0, 300)
    # Each process sold some of them, from one row in PostgreSQL.
    booked = answered_by(two_processes, "/api/v1/events/{id}/bookings")
    assert set(booked) == {0, 1} and sum(booked.values()) == 400


async def test_sigterm_drains_both_processes_and_answers_the_requests_in_flight(
    two_processes: Server,
) -> None:
    # Sign-ups hash a password (0.5 s at this cost, one at a time in each process): four
    # of them are still being handled when the parent is told to stop.
    async with fresh_connections() as session:
        async def register(n: int) -> int:
            async with session.post(
                f"{two_processes.url}/api/v1/auth/register",
                json={"email": f"drain-{n}-{uuid.uuid4().hex[:6]}@example.com",
                      "password": "correct horse", "name": "Drain", "role": "customer"},
            ) as answer:
                return answer.status

        signups = [asyncio.create_task(register(n)) for n in range(4)]
        await asyncio.sleep(0.3)
        two_processes.send(signal.SIGTERM)
        assert await asyncio.gather(*signups) == [201] * 4

    assert await asyncio.to_thread(two_processes.wait, 30) == 0
    stopped = [line.get("process") for line in log_lines(two_processes)
               if line["event"] == "stopped"]
    # Each process, then the parent (no process index) once both have.
    assert sorted(stopped[:2]) == [0, 1] and stopped[2:] == [None]


async def test_a_killed_process_is_replaced_while_the_other_serves_the_port(
    two_processes: Server,
) -> None:
    killed = children(two_processes)[1]
    os.kill(killed, signal.SIGKILL)
    async with fresh_connections() as session:
        async def replaced() -> bool:
            # The port answers throughout: the other process serves it meanwhile.
            async with session.get(f"{two_processes.url}/healthz") as answer:
                assert answer.status == 200
            return children(two_processes)[1] != killed

        await until(replaced)
    died = [line for line in log_lines(two_processes) if line["event"] == "process_died"]
    assert [(line["index"], line["pid"], line["status"]) for line in died] == [
        (1, killed, -signal.SIGKILL)
    ]
    await until(lambda: _served_again(two_processes))
    assert two_processes.stop() == 0


async def _served_again(server: Server) -> bool:
    """Whether the replacement process answers on the port (its requests logged anew)."""
    before = answered_by(server, "/healthz")[1]
    async with fresh_connections() as session:
        for _ in range(10):
            async with session.get(f"{server.url}/healthz") as answer:
                assert answer.status == 200
    return answered_by(server, "/healthz")[1] > before
