"""Webhook deliveries through real `eventbook worker` processes that are killed,
restarted, or lose PostgreSQL or Redis, to real receivers on loopback: every message
still arrives, verified."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from eventbook.app import create_app
from eventbook.config import Config
from eventbook.embedded import EmbeddedServices
from tests.client import Api, eventually, expect
from tests.faults.conftest import Processes
from tests.faults.invariants import assert_settled, wait_until_drained
from tests.faults.load import seed_accounts, seed_events
from tests.processes import environment
from tests.seed import insert_bookings
from tests.webhook_receivers import Receiver, receiving

# An attempt without an answer this long fails; a taken delivery's lease is this plus
# five seconds, so the deliveries a killed worker had in flight are due again soon.
TIMEOUT_SECONDS = 0.5

Register = Callable[[Config, asyncpg.Pool, Receiver], Awaitable[uuid.UUID]]


@pytest.fixture
def register(aiohttp_client: Any) -> Register:
    """Registers an endpoint for the receiver's URL through the API (served in this
    process, on the world of `config` and `pool`), for a new organizer; the receiver
    verifies with its secret. Returns the organizer, whose events the endpoint hears of."""

    async def make(config: Config, pool: asyncpg.Pool, receiver: Receiver) -> uuid.UUID:
        config = config.replace(webhook_allow_http=True, webhook_allow_private=True)
        api = Api(await aiohttp_client(create_app(config, actors=False)))
        [organizer] = await seed_accounts(pool, config, 1, role="organizer")
        endpoint = await expect(
            await api.post("/api/v1/webhooks", organizer, json={"url": receiver.url}), 201
        )
        receiver.secrets.append(endpoint["secret"])
        return organizer.id

    return make


def worker_env(config: Config, **extra: str) -> dict[str, str]:
    return environment(
        config, EVENTBOOK_WEBHOOK_ALLOW_HTTP="true", EVENTBOOK_WEBHOOK_ALLOW_PRIVATE="true",
        EVENTBOOK_WEBHOOK_TIMEOUT_SECONDS=str(TIMEOUT_SECONDS), **extra,
    )


async def booked(pool: asyncpg.Pool, config: Config, organizer: uuid.UUID,
                 count: int) -> set[str]:
    """`count` bookings of an event of the organizer; the webhook-id each is sent with."""
    customers = await seed_accounts(pool, config, count)
    [event] = await seed_events(pool, count, organizer=organizer)
    bookings = await insert_bookings(pool, event, [c.id for c in customers])
    return {f"msg_booking.created_{booking}" for booking in bookings}


def slow(seconds: float) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def answer(request: web.Request) -> web.Response:
        await asyncio.sleep(seconds)
        return web.Response(status=204)

    return answer


async def delivery_states(pool: asyncpg.Pool) -> dict[str, tuple[str, int]]:
    """(status, attempts) of every delivery, by webhook-id."""
    rows = await pool.fetch("SELECT message_id, status, attempts FROM webhook_deliveries")
    return {row["message_id"]: (row["status"], row["attempts"]) for row in rows}


async def all_succeeded(pool: asyncpg.Pool, messages: set[str]) -> dict[str, tuple[str, int]]:
    states = await delivery_states(pool)
    done = set(states) == messages and {s for s, _ in states.values()} == {"succeeded"}
    return states if done else {}


async def test_a_worker_killed_mid_delivery_loses_nothing(
    config: Config, pool: asyncpg.Pool, processes: Processes, register: Register
) -> None:
    """A worker is SIGKILLed while a slow receiver holds its attempts in flight. A new
    worker delivers the rest and, once their leases run out, the deliveries the dead one
    had in hand: every message arrives verified and every delivery ends succeeded; the
    only messages received twice are ones in hand at the kill, with their one webhook-id."""
    config = config.replace(claim_idle_ms=1000)
    receiver = Receiver()
    receiver.answer = slow(0.2)
    async with receiving(receiver):
        organizer = await register(config, pool, receiver)
        messages = await booked(pool, config, organizer, 100)
        env = worker_env(config)

        first = processes.worker(env, name="killed")
        await eventually(lambda: len(receiver.received) >= 20, timeout=60)
        first.stop(signal.SIGKILL)
        states = await delivery_states(pool)
        in_hand = {m for m, (status, attempts) in states.items()
                   if status == "pending" and attempts > 0}
        assert in_hand, "nothing was in flight at the kill"
        assert len(receiver.message_ids()) < len(messages), "the kill came too late"

        second = processes.worker(env, name="restarted")
        states = await eventually(lambda: all_succeeded(pool, messages), timeout=60)
        await wait_until_drained(config)
        assert second.stop() == 0

    assert receiver.message_ids() == messages
    assert [r for r in receiver.received if r.verified is None] == []
    twice = {m for m, n in Counter(r.message_id for r in receiver.received).items() if n > 1}
    assert twice <= in_hand
    assert {states[m][1] for m in messages - in_hand} == {1}
    assert {states[m][1] for m in in_hand} == {2}
    assert_settled(config)


async def test_a_retry_scheduled_before_a_restart_is_made_by_the_next_worker_at_its_time(
    config: Config, pool: asyncpg.Pool, processes: Processes, register: Register
) -> None:
    """The receiver fails the first attempt; the worker schedules the retry and is
    restarted before it is due. The next worker makes the retry at its time, not before,
    and the delivery succeeds at the second attempt."""
    receiver = Receiver()
    arrived: list[float] = []

    async def answer(request: web.Request) -> web.Response:
        arrived.append(time.time())
        return web.Response(status=500 if len(arrived) == 1 else 204)

    receiver.answer = answer
    async with receiving(receiver):
        organizer = await register(config, pool, receiver)
        [message] = await booked(pool, config, organizer, 1)
        env = worker_env(config, EVENTBOOK_WEBHOOK_RETRY_SCHEDULE="2")

        first = processes.worker(env, name="first")

        async def failed_once() -> asyncpg.Record | None:
            return await pool.fetchrow(
                "SELECT * FROM webhook_deliveries WHERE last_status_code = 500")

        delivery = await eventually(failed_once, timeout=60)
        assert first.stop() == 0
        assert len(arrived) == 1
        assert (delivery["status"], delivery["attempts"]) == ("pending", 1)

        second = processes.worker(env, name="second")
        await eventually(lambda: len(arrived) == 2, timeout=60)
        await eventually(lambda: all_succeeded(pool, {message}))
        assert second.stop() == 0

    assert dt.datetime.fromtimestamp(arrived[1], dt.UTC) >= delivery["next_attempt_at"]
    assert receiver.message_ids() == {message}
    assert len(receiver.verified) == 2
    assert "webhook_delivered" in second.output


async def test_every_message_arrives_though_postgres_stops_mid_delivery(
    private_world: tuple[Config, asyncpg.Pool], private: EmbeddedServices,
    processes: Processes, register: Register,
) -> None:
    """PostgreSQL stops for seconds while a worker delivers to a slow receiver (attempts
    in flight whose results cannot be recorded). Once it is back every message arrives,
    verified, and every delivery ends succeeded."""
    config, pool = private_world
    receiver = Receiver()
    receiver.answer = slow(0.1)
    async with receiving(receiver):
        organizer = await register(config, pool, receiver)
        messages = await booked(pool, config, organizer, 60)
        worker = processes.worker(worker_env(config))
        await eventually(lambda: len(receiver.received) >= 10, timeout=60)
        await asyncio.to_thread(private.stop_postgres)
        got = len(receiver.message_ids())
        await asyncio.sleep(3)
        await asyncio.to_thread(private.start_postgres)
        await eventually(lambda: receiver.message_ids() == messages, timeout=60)
        await eventually(lambda: all_succeeded(pool, messages), timeout=30)
        assert worker.stop() == 0

    assert got < len(messages), "every message arrived before the outage"
    assert [r for r in receiver.received if r.verified is None] == []


async def test_messages_of_bookings_made_while_redis_is_down_arrive_once_it_is_back(
    private_world: tuple[Config, asyncpg.Pool], private: EmbeddedServices,
    processes: Processes, register: Register,
) -> None:
    """Redis stops; bookings go on (their outbox rows are in PostgreSQL). Once Redis is
    back, the messages of the bookings made before and during the outage all arrive,
    verified, each delivery succeeded."""
    config, pool = private_world
    async with receiving() as receiver:
        organizer = await register(config, pool, receiver)
        worker = processes.worker(worker_env(config))
        before = await booked(pool, config, organizer, 20)
        await eventually(lambda: receiver.message_ids() == before, timeout=60)
        await asyncio.to_thread(private.stop_redis)
        during = await booked(pool, config, organizer, 20)
        await asyncio.sleep(2)
        await asyncio.to_thread(private.start_redis)
        messages = before | during
        await eventually(lambda: receiver.message_ids() == messages, timeout=60)
        await eventually(lambda: all_succeeded(pool, messages), timeout=30)
        await wait_until_drained(config)
        assert worker.stop() == 0

    assert [r for r in receiver.received if r.verified is None] == []
    assert_settled(config)
