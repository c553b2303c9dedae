"""Slow clients holding connections to a real `eventbook serve`: cut off on time."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import asyncpg

from eventbook.config import Config
from tests.faults.conftest import Processes
from tests.faults.invariants import assert_check_reports_nothing
from tests.faults.load import call
from tests.processes import environment

TIMEOUT = 1  # EVENTBOOK_KEEPALIVE_TIMEOUT_SECONDS and EVENTBOOK_BODY_TIMEOUT_SECONDS
SLACK = 2.0  # scheduling on a busy 2-core machine
# aiohttp reads and drops what is left of an unread body for up to 10 s (its
# lingering_time) before it closes a connection after answering early.
LINGER = 10


async def held_for(port: int, sent: bytes) -> tuple[float | None, float, bytes]:
    """Connect, send `sent`, then stall. Seconds until the first byte of an answer (None
    when none came) and until the server closed the connection; what it sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        writer.write(sent)
        await writer.drain()
        limit = TIMEOUT + LINGER + 3 * SLACK
        first = await asyncio.wait_for(reader.read(65536), limit)
        answered = time.monotonic() - started if first else None
        rest = await asyncio.wait_for(reader.read(), limit)
        return answered, time.monotonic() - started, first + rest
    finally:
        writer.close()


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip()
               for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


async def test_slow_clients_are_cut_off_on_time_while_others_are_served(
    config: Config, pool: asyncpg.Pool, processes: Processes
) -> None:
    """With both timeouts at 1 s: a connection that sends nothing, one that sends half
    its request headers, and one left idle after a request are each closed by the
    server within the timeout (plus scheduling slack); one that sends its headers and
    half its body is answered 408 `request_timeout` problem+json on time, and the
    connection is then closed; meanwhile a well-behaved client is answered throughout."""
    server = processes.serve(environment(
        config, EVENTBOOK_KEEPALIVE_TIMEOUT_SECONDS=str(TIMEOUT),
        EVENTBOOK_BODY_TIMEOUT_SECONDS=str(TIMEOUT),
    ))
    await server.wait_ready()
    port = server.port
    body = json.dumps({"email": "slow@example.com", "password": "a long password"}).encode()
    half_body = (
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:10]
    )
    kept_alive = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    stop = asyncio.Event()

    async def well_behaved() -> list[int | None]:
        statuses = []
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                statuses.append((await call(session, "GET", f"{server.url}/healthz")).status)
                await asyncio.sleep(0.2)
        return statuses

    served = asyncio.create_task(well_behaved())
    try:
        idle, trickled, stalled, kept = await asyncio.gather(
            held_for(port, b""),
            held_for(port, b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAcc"),
            held_for(port, half_body),
            held_for(port, kept_alive),
        )
    finally:
        stop.set()
    statuses = await served

    for answered, closed, received in (idle, trickled):
        assert (answered, received) == (None, b"")
        assert TIMEOUT * 0.5 <= closed < TIMEOUT + SLACK
    answered, closed, received = kept
    assert answered is not None and answered < SLACK
    assert split_response(received)[0] == 200
    assert TIMEOUT * 0.5 <= closed - answered < TIMEOUT + SLACK

    answered, closed, received = stalled
    status, headers, problem = split_response(received)
    assert status == 408
    assert headers["content-type"].startswith("application/problem+json")
    assert headers["connection"] == "close"
    assert json.loads(problem)["code"] == "request_timeout"
    assert answered is not None and TIMEOUT * 0.5 <= answered < TIMEOUT + SLACK
    assert closed < TIMEOUT + LINGER + SLACK

    assert len(statuses) >= 5 and set(statuses) == {200}
    assert server.stop() == 0
    assert_check_reports_nothing(config)
