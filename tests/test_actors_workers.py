"""Actors in their own processes: `eventbook worker` beside `eventbook serve --no-actors`."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from eventbook.actors import ACTOR_NAMES
from eventbook.actors.stream import stream_key
from eventbook.config import Config
from eventbook.keys import REDIS
from tests.client import Api, User, eventually, expect, future
from tests.processes import Process, Server, environment, run

BOOKINGS = 1000
CUSTOMERS = 20


def log_lines(process: Process, event: str) -> list[dict[str, Any]]:
    lines = []
    for line in process.output.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                lines.append(record)
    return lines


class Client:
    """Just enough of the API, over real HTTP, to make many bookings."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def register(self, role: str) -> str:
        body = {"email": f"{role}-{uuid.uuid4().hex[:10]}@example.com", "password": "pw-123456",
                "name": "Load Test", "role": role}
        async with self.session.post("/api/v1/auth/register", json=body) as answer:
            assert answer.status == 201, await answer.text()
            return str((await answer.json())["access_token"])

    async def post(self, path: str, token: str, body: dict[str, Any],
                   request_id: str | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"}
        if request_id:
            headers["X-Request-ID"] = request_id
        async with self.session.post(path, json=body, headers=headers) as answer:
            assert answer.status == 201, await answer.text()
            result: dict[str, Any] = await answer.json()
            return result


@pytest.mark.slow
async def test_two_workers_beside_a_web_process_confirm_1000_bookings_exactly_once(
    config: Config, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    env = environment(config)
    web = Server(env, tmp_path / "web.log", "--no-actors")
    workers = [Process(["worker"], env, tmp_path / f"worker{n}.log") for n in (1, 2)]
    try:
        await web.wait_ready()
        for worker in workers:
            worker.wait_for_output("worker_running")

        started = time.monotonic()
        connector = aiohttp.TCPConnector(limit=32)
        async with aiohttp.ClientSession(web.url, connector=connector) as session:
            client = Client(session)
            organizer = await client.register("organizer")
            customers = await asyncio.gather(
                *(client.register("customer") for _ in range(CUSTOMERS))
            )
            event = await client.post(
                "/api/v1/events", organizer,
                {"title": "Stadium", "starts_at": future(), "capacity": BOOKINGS},
            )
            bookings = await asyncio.gather(*(
                client.post(f"/api/v1/events/{event['id']}/bookings",
                            customers[n % CUSTOMERS], {"quantity": 1}, f"load-{n}")
                for n in range(BOOKINGS)
            ))
        booked_in = time.monotonic() - started

        async def all_confirmed() -> bool:
            sent = await pool.fetchval(
                "SELECT count(*) FROM bookings WHERE confirmation_status = 'sent'"
            )
            return bool(sent == BOOKINGS)

        await eventually(all_confirmed, timeout=60, interval=0.2)
        confirmed_in = time.monotonic() - started
        codes = [worker.stop() for worker in workers]
        assert codes == [0, 0]
    finally:
        for process in (web, *workers):
            process.stop()

    mails = await pool.fetchrow(
        "SELECT count(*) AS rows, count(DISTINCT booking_id) AS bookings, count(sent_at) AS sent"
        " FROM notifications WHERE kind = 'booking_confirmed'"
    )
    assert dict(mails) == {"rows": BOOKINGS, "bookings": BOOKINGS, "sent": BOOKINGS}
    sent_lines = [log_lines(worker, "confirmation_sent") for worker in workers]
    assert sum(len(lines) for lines in sent_lines) == BOOKINGS  # each mail sent once
    assert all(sent_lines), "both workers took part"
    # The request id of a booking follows it into the worker that confirmed it.
    traced = {line["request_id"]: line["booking_id"] for lines in sent_lines for line in lines}
    assert traced["load-7"] == bookings[7]["id"]
    print(f"\n{BOOKINGS} bookings answered in {booked_in:.1f}s, confirmed in {confirmed_in:.1f}s")


async def test_a_worker_stopped_mid_mail_finishes_it_acknowledges_it_and_exits_0(
    api: Api, organizer: User, customer: User, config: Config, pool: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    event = await api.create_event(organizer)
    booking = await expect(await api.book(customer, event), 201)
    worker = Process(["worker"], environment(config, EVENTBOOK_MAIL_LATENCY_MS="2500"),
                     tmp_path / "worker.log")
    try:
        # The mail is recorded just before it is sent: from then on it is in hand.
        await eventually(lambda: pool.fetchval(
            "SELECT count(*) FROM notifications WHERE booking_id = $1", booking["id"]
        ), timeout=30)
        assert worker.stop(signal.SIGTERM) == 0
    finally:
        worker.stop(signal.SIGKILL)

    status = await pool.fetchval(
        "SELECT confirmation_status FROM bookings WHERE id = $1", booking["id"]
    )
    assert status == "sent"
    records = [json.loads(line) for line in worker.output.splitlines() if line.startswith("{")]
    events = [
        record["event"] for record in records
        if record.get("actor") in (None, "confirmations")
    ]
    assert events.index("worker_stopping") < events.index("message_handled")
    assert events.index("message_handled") < events.index("consumer_stopped")
    pending = await api.app[REDIS].xpending(
        stream_key(config.redis_prefix, "confirmations"), "confirmations"
    )
    assert pending["pending"] == 0


def test_a_worker_refuses_an_unknown_actor_name(config: Config) -> None:
    result = run(["worker", "--actors", "relay,mailman"], environment(config))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"eventbook: unknown actors: mailman (known: {', '.join(ACTOR_NAMES)})"
    )
