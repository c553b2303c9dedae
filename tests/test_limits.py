"""Abuse limits: oversized pages, parameters and bodies are refused with the contract's
problem, and what aiohttp refuses before any of our code runs is at least never a 500;
the rate limits never turn a Redis fault into a 500.

Rate limits have their tests next to what they guard: bookings per customer per second
in tests/test_bookings.py, login attempts per e-mail and per address in
tests/test_accounts.py. Slow clients are cut off in tests/faults/test_slow_clients.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio

from eventbook.embedded import EmbeddedServices
from eventbook.endpoints import CUSTOMER, ORGANIZER, PUBLIC, SIGNED_IN
from eventbook.keys import CONFIG
from eventbook.pages import MAX_LIMIT
from tests.assertions import assert_problem
from tests.client import Api, User, eventually, expect, list_routes


async def each_list(api: Api) -> AsyncIterator[tuple[str, User | None]]:
    """Every list route, as a path with its ids filled in and a user allowed to read it."""
    organizer = await api.register(role="organizer")
    customer = await api.register()
    event = await api.create_event(organizer)
    callers: dict[tuple[str, ...] | None, User | None] = {
        PUBLIC: None, ORGANIZER: organizer, CUSTOMER: customer, SIGNED_IN: customer,
    }
    hook = await expect(await api.post("/api/v1/webhooks", organizer,
                                       json={"url": "https://8.8.8.8/eventbook-hook"}), 201)
    routes = list_routes(api.app)
    assert len(routes) >= 5, routes
    for template, roles in routes:
        owner = hook if template.startswith("/api/v1/webhooks/") else event
        yield template.format(id=owner["id"]), callers[roles]


async def refusals(api: Api, params: dict[str, str], field: str) -> list[str]:
    """The lists that do not answer `params` with a 422 naming `field`."""
    wrong = []
    async for path, user in each_list(api):
        answer = await api.get(path, user, params=params)
        body: dict[str, Any] = await answer.json()
        if answer.status != 422 or field not in body.get("errors", {}):
            wrong.append(f"{path}: {answer.status} {body}")
    return wrong


async def test_every_list_serves_the_largest_page(api: Api) -> None:
    async for path, user in each_list(api):
        answer = await api.get(path, user, params={"limit": str(MAX_LIMIT)})
        assert answer.status == 200, (path, await answer.text())


async def test_every_list_refuses_a_page_larger_than_100(api: Api) -> None:
    assert await refusals(api, {"limit": str(MAX_LIMIT + 1)}, "limit") == []


async def test_every_list_refuses_a_page_size_of_absurd_length(api: Api) -> None:
    # Past the 4300 digits Python's int() accepts: still a plain 422.
    assert await refusals(api, {"limit": "9" * 5000}, "limit") == []


async def test_every_list_refuses_an_empty_or_negative_page(api: Api) -> None:
    assert await refusals(api, {"limit": "0"}, "limit") == []
    assert await refusals(api, {"limit": "-1"}, "limit") == []


async def test_every_list_refuses_an_over_long_cursor(api: Api) -> None:
    assert await refusals(api, {"cursor": "A" * 513}, "cursor") == []


async def test_every_list_refuses_unknown_and_repeated_parameters(api: Api) -> None:
    assert await refusals(api, {"limitt": "5"}, "limitt") == []
    async for path, user in each_list(api):
        answer = await api.get(f"{path}?limit=5&limit=6", user)
        await assert_problem(answer, 422, "validation_failed")


async def test_the_event_search_refuses_an_over_long_query(api: Api) -> None:
    answer = await api.get("/api/v1/events", params={"q": "x" * 201})
    body = await assert_problem(answer, 422, "validation_failed")
    assert "q" in body["errors"]
    # Long enough to be most of aiohttp's 8190-byte request line, and still ours to refuse.
    answer = await api.get("/api/v1/events", params={"q": "x" * 8000})
    await assert_problem(answer, 422, "validation_failed")


async def test_a_body_over_the_default_1_mib_is_a_413_problem(api: Api) -> None:
    assert api.app[CONFIG].max_body_bytes == 1024 * 1024
    declared = await api.post(
        "/api/v1/auth/login", data=b"x" * (1024 * 1024 + 1),
        headers={"Content-Type": "application/json"},
    )
    await assert_problem(declared, 413, "body_too_large")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * 65536  # 1.25 MiB in all, with no Content-Length to go by

    streamed = await api.post(
        "/api/v1/auth/login", data=chunks(), headers={"Content-Type": "application/json"},
    )
    await assert_problem(streamed, 413, "body_too_large")


def gzip_bomb(mib: int) -> bytes:
    """`mib` MiB of zeros as one valid gzip member about a thousandth its size. Made in
    milliseconds: after a full flush each further MiB of zeros compresses to the same
    bytes, so one is compressed and repeated."""
    zeros = bytes(1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    repeated = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    trailer = struct.pack("<II", crc, (mib << 20) & 0xFFFFFFFF)
    return header + first + repeated * (mib - 1) + deflate.flush() + trailer


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer with a Content-Length: status, headers, body."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in head[1:] if line)
    body = await reader.readexactly(int(headers["Content-Length"]))
    return int(head[0].split()[1]), headers, body


@contextlib.asynccontextmanager
async def healthz_latencies(api: Api) -> AsyncIterator[list[float]]:
    """/healthz asked again and again meanwhile, on a connection of its own: how long
    each answer took."""
    latencies: list[float] = []

    async def probe() -> None:
        while True:
            started = time.perf_counter()
            await (await api.get("/healthz")).read()
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)

    task = asyncio.create_task(probe())
    try:
        yield latencies
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_compressed_body_is_refused_with_a_415_problem(api: Api) -> None:
    """Request bodies are read as sent: any Content-Encoding but identity is refused,
    well-formed (gzip, deflate, br) or not (a malformed one never reaches a decoder)."""
    body = json.dumps({"email": "a@example.com", "password": "x"}).encode()
    for coding, data in [
        ("gzip", zlib.compress(body, wbits=31)),
        ("deflate", zlib.compress(body)),
        ("br", b"\x0b\x02\x80hello\x03"),
        ("gzip", b"\x1f\x8b\x08\x00 this is not gzip"),
        ("GZip, identity", zlib.compress(body, wbits=31)),
    ]:
        answer = await api.post(
            "/api/v1/auth/login", data=data,
            headers={"Content-Type": "application/json", "Content-Encoding": coding},
        )
        await assert_problem(answer, 415, "unsupported_content_encoding")
        assert answer.headers["Accept-Encoding"] == "identity"
    plain = await api.post(
        "/api/v1/auth/login", data=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "identity"},
    )
    await assert_problem(plain, 401, "invalid_credentials")


async def test_a_gzip_bomb_is_refused_without_being_inflated(api: Api) -> None:
    """1 GiB of zeros in 1 MiB of gzip: inflating it would take the server's one event
    loop about a second (measured: 1.05 s of CPU, /healthz stalled 0.7 s), even
    after the answer, as aiohttp reads and discards the rest of a body. Refused
    unread, it costs what 1 MiB of plain bytes costs. The bomb goes on a raw connection
    with a second request after it, which aiohttp answers only once it has read the
    whole first body, so the measurement covers all the work the bomb causes."""
    bomb = gzip_bomb(1024)
    assert len(bomb) < 1100 * 1024
    host, port = api.client.host, api.client.port
    reader, writer = await asyncio.open_connection(host, port)
    cpu_before = time.process_time()
    try:
        async with healthz_latencies(api) as latencies:
            await eventually(lambda: latencies)
            writer.write(
                b"POST /api/v1/auth/login HTTP/1.1\r\nHost: eventbook\r\n"
                b"Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
                + f"Content-Length: {len(bomb)}\r\n\r\n".encode() + bomb
                + b"GET /healthz HTTP/1.1\r\nHost: eventbook\r\n\r\n"
            )
            async with asyncio.timeout(10):
                status, headers, body = await read_answer(reader)
                follow_up, _, _ = await read_answer(reader)
            probed = len(latencies)
            await eventually(lambda: len(latencies) > probed)
        cpu = time.process_time() - cpu_before
    finally:
        writer.close()
    assert status == 415
    assert headers["Content-Type"].startswith("application/problem+json")
    assert json.loads(body)["code"] == "unsupported_content_encoding"
    assert follow_up == 200
    assert cpu < 0.3, f"the server spent {cpu:.2f} s of CPU on the bomb"
    assert max(latencies) < 0.5, latencies


async def test_a_request_line_too_long_for_aiohttp_is_a_400_never_a_500(api: Api) -> None:
    """aiohttp's HTTP parser refuses it before any middleware runs, so the answer is
    aiohttp's own text/plain 400, not problem+json: a documented limitation (README,
    Guarantees), pinned here so a change in aiohttp shows."""
    answer = await api.get("/api/v1/events", params={"q": "x" * 9000})
    assert answer.status == 400
    assert answer.content_type == "text/plain"
    assert "X-Request-ID" not in answer.headers


async def test_headers_too_large_for_aiohttp_are_a_400_never_a_500(api: Api) -> None:
    answer = await api.get("/healthz", headers={"X-Padding": "x" * 9000})
    assert answer.status == 400
    assert answer.content_type == "text/plain"



async def test_rate_limits_step_aside_when_redis_refuses_writes(
    make_api: Callable[..., Awaitable[Api]], tmp_path: Path
) -> None:
    """A Redis that answers but refuses writes (a replica after a failover, out of
    memory, no replicas to acknowledge) is as good as down for the rate limiter: the
    limits are not enforced, as when Redis is down, rather than every booking and
    every login failing with a 500."""
    private = EmbeddedServices(tmp_path)
    redis_url = private.start_redis()
    try:
        api = await make_api(redis_url=redis_url, booking_rate=5)
        organizer = await api.register(role="organizer")
        customer = await api.register()
        event = await api.create_event(organizer)
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            await client.config_set("min-replicas-to-write", 1)  # every write: NOREPLICAS
            assert (await api.book(customer, event)).status == 201
            assert (await api.login(customer.email, customer.password)).status == 200
            answer = await api.login(customer.email, "wrong password")
            await assert_problem(answer, 401, "invalid_credentials")
        finally:
            await client.aclose()
    finally:
        private.stop_redis()
