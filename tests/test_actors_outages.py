"""An outage is not the message's fault: the actors wait for the dependency and go on,
counting nothing; only failures with every dependency healthy count toward the limit."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
import structlog

from eventbook.actors.confirmations import Confirmations
from eventbook.actors.mailer import MailUnavailable, SimulatedMailer
from eventbook.actors.relay import OutboxRelay
from eventbook.actors.stream import Message, dead_letter_key, failures_key, stream_key
from eventbook.config import Config
from eventbook.keys import REDIS
from tests.client import Api, User, eventually, expect


class MailServerDown(SimulatedMailer):
    """A mail server that is unreachable until `restore()`; its probe says so too."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True
        self.refused = 0

    def restore(self) -> None:
        self.down = False

    async def send(self, to: str, subject: str, body: str) -> None:
        if self.down:
            self.refused += 1
            raise MailUnavailable("connection refused")
        await super().send(to, subject, body)

    async def probe(self) -> None:
        if self.down:
            raise MailUnavailable("connection refused")


class SlowMailer(SimulatedMailer):
    async def send(self, to: str, subject: str, body: str) -> None:
        await asyncio.sleep(1.0)
        await super().send(to, subject, body)


async def status_of(pool: asyncpg.Pool, booking_id: str) -> str:
    return str(await pool.fetchval(
        "SELECT confirmation_status FROM bookings WHERE id = $1", booking_id
    ))


async def run_until(actor: Any, done: Any, timeout: float = 20) -> None:
    stopping = asyncio.Event()
    task = asyncio.create_task(actor.run(stopping))
    try:
        await eventually(done, timeout=timeout)
    finally:
        stopping.set()
        await task


@pytest.fixture
async def event(api: Api, organizer: User) -> dict[str, Any]:
    return await api.create_event(organizer, capacity=100)


async def test_a_mail_server_outage_is_waited_out_without_counting_an_attempt(
    api: Api, event: dict[str, Any], customer: User, config: Config, pool: asyncpg.Pool
) -> None:
    """With a single attempt allowed, a confirmation whose mail server is down for a
    while is still sent once the server is back: nothing dead-lettered, nothing counted."""
    config = config.replace(max_attempts=1)
    client = api.app[REDIS]
    booking = await expect(await api.book(customer, event), 201)
    assert await OutboxRelay(config, pool, client).relay_once() == 1

    mailer = MailServerDown()
    actor = Confirmations(config, pool, client, mailer)

    async def restore_later() -> None:
        await eventually(lambda: mailer.refused >= 1)
        await asyncio.sleep(1.0)
        mailer.restore()

    restorer = asyncio.create_task(restore_later())
    with structlog.testing.capture_logs() as logs:
        await run_until(actor, lambda: _is_sent(pool, booking["id"]))
    await restorer

    assert mailer.sent == 1
    assert await client.xlen(dead_letter_key(config.redis_prefix, "confirmations")) == 0
    assert await client.hlen(failures_key(config.redis_prefix, "confirmations")) == 0
    events = [line["event"] for line in logs]
    assert "message_waiting_for_dependencies" in events
    assert "message_failed" not in events


async def _is_sent(pool: asyncpg.Pool, booking_id: str) -> bool:
    return await status_of(pool, booking_id) == "sent"


class DroppedConnectionOnce(Confirmations):
    """Its first message fails as asyncpg fails on a pooled connection that received the
    server's FATAL "terminating connection" while idle, before the closed socket was
    noticed: the protocol sits in its error state (2) and the next query cannot start."""

    failed = False

    async def handle(self, message: Message) -> None:
        if not self.failed:
            self.failed = True
            raise asyncpg.InternalClientError(
                "cannot switch to state 12; another operation (2) is in progress"
            )
        await super().handle(message)


async def test_a_dead_pooled_connection_with_every_dependency_up_costs_no_attempt(
    api: Api, event: dict[str, Any], customer: User, config: Config, pool: asyncpg.Pool
) -> None:
    """With a single attempt allowed, a message that meets a connection the server
    dropped is tried again at once, uncounted, and confirmed."""
    config = config.replace(max_attempts=1)
    client = api.app[REDIS]
    booking = await expect(await api.book(customer, event), 201)
    assert await OutboxRelay(config, pool, client).relay_once() == 1
    mailer = SimulatedMailer()
    actor = DroppedConnectionOnce(config, pool, client, mailer)
    with structlog.testing.capture_logs() as logs:
        await run_until(actor, lambda: _is_sent(pool, booking["id"]))
    assert actor.failed and mailer.sent == 1
    assert await client.xlen(dead_letter_key(config.redis_prefix, "confirmations")) == 0
    events = [line["event"] for line in logs]
    assert "message_retried_after_transient_error" in events
    assert "message_failed" not in events


async def test_a_dead_connection_error_that_repeats_with_everything_up_is_counted(
    api: Api, event: dict[str, Any], customer: User, config: Config, pool: asyncpg.Pool
) -> None:
    """An outage-class error is not a free pass: repeated while PostgreSQL, Redis and the
    mail server all answer, it is the message's own and dead-letters at the limit."""

    class AlwaysDropped(Confirmations):
        async def handle(self, message: Message) -> None:
            raise asyncpg.InternalClientError("cannot switch to state 12")

    config = config.replace(max_attempts=2)
    client = api.app[REDIS]
    booking = await expect(await api.book(customer, event), 201)
    assert await OutboxRelay(config, pool, client).relay_once() == 1
    actor = AlwaysDropped(config, pool, client, SimulatedMailer(), retry_delay=0.05)
    await run_until(actor, lambda: _is_failed(pool, booking["id"]))
    [(_, fields)] = await client.xrange(dead_letter_key(config.redis_prefix, "confirmations"))
    assert (fields["cause"], fields["attempts"]) == ("message", "2")


async def _is_failed(pool: asyncpg.Pool, booking_id: str) -> bool:
    return await status_of(pool, booking_id) == "failed"


async def test_a_message_handled_longer_than_the_claim_time_is_not_taken_by_another(
    api: Api, event: dict[str, Any], customer: User, config: Config, pool: asyncpg.Pool
) -> None:
    """A consumer keeps what it is working on claimed: a second consumer with a claim
    time far below the handling time neither takes it nor counts a delivery."""
    config = config.replace(claim_idle_ms=200)
    client = api.app[REDIS]
    booking = await expect(await api.book(customer, event), 201)
    assert await OutboxRelay(config, pool, client).relay_once() == 1

    slow, other = SlowMailer(), SimulatedMailer()
    stopping = asyncio.Event()
    first = asyncio.create_task(Confirmations(config, pool, client, slow).run(stopping))
    await asyncio.sleep(0.3)  # the first consumer has read the message
    second = asyncio.create_task(Confirmations(config, pool, client, other).run(stopping))
    try:
        await eventually(lambda: _is_sent(pool, booking["id"]))
    finally:
        stopping.set()
        await asyncio.gather(first, second)
    assert (slow.sent, other.sent) == (1, 0)
    stream = stream_key(config.redis_prefix, "confirmations")
    assert (await client.xpending(stream, "confirmations"))["pending"] == 0


async def test_the_relay_waits_out_a_redis_that_refuses_writes_and_relays_after(
    api: Api, event: dict[str, Any], customer: User, config: Config, pool: asyncpg.Pool
) -> None:
    """Redis out of memory (writes refused): the relay keeps the rows in the outbox and
    does not crash; once Redis takes writes again they are relayed."""
    client = api.app[REDIS]
    relay = OutboxRelay(config, pool, client, poll_interval=0.1)
    stopping = asyncio.Event()
    await client.config_set("maxmemory-policy", "noeviction")
    await client.config_set("maxmemory", "1")
    try:
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(relay.run(stopping))
            await expect(await api.book(customer, event), 201)
            await eventually(lambda: any(line["event"] == "relay_waiting_for_dependencies"
                                         for line in logs))
            assert await pool.fetchval("SELECT count(*) FROM outbox") == 1
    finally:
        await client.config_set("maxmemory", "0")
    try:
        await eventually(lambda: _outbox_empty(pool), timeout=10)
    finally:
        stopping.set()
        await task
    assert task.exception() is None


async def _outbox_empty(pool: asyncpg.Pool) -> bool:
    return await pool.fetchval("SELECT count(*) FROM outbox") == 0
