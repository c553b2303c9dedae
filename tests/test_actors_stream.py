"""The actor runtime: reclaiming what a dead consumer left, dead letters, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import asyncpg
import pytest
import redis.asyncio
import structlog

from eventbook.actors import ACTOR_NAMES, Supervisor, build_actors
from eventbook.actors.confirmations import Confirmations
from eventbook.actors.mailer import MailError, SimulatedMailer
from eventbook.actors.relay import OutboxRelay
from eventbook.actors.stream import dead_letter_key, heartbeat_key, stream_key
from eventbook.config import Config
from eventbook.keys import REDIS
from tests.client import Api, User, eventually, expect


class StuckMailer:
    """A mail server that never answers: the consumer using it is caught mid-message."""

    def __init__(self) -> None:
        self.called = asyncio.Event()

    async def send(self, to: str, subject: str, body: str) -> None:
        self.called.set()
        await asyncio.Event().wait()

    async def probe(self) -> None:
        """It accepts connections; it just never finishes a mail."""


class RefusingMailer(SimulatedMailer):
    """Refuses every mail to one address, delivers the rest."""

    def __init__(self, refused: str) -> None:
        super().__init__()
        self.refused = refused

    async def send(self, to: str, subject: str, body: str) -> None:
        if to == self.refused:
            raise MailError(f"mailbox {to} unavailable")
        await super().send(to, subject, body)


async def has_status(pool: asyncpg.Pool, booking_id: str, status: str) -> bool:
    current = await pool.fetchval(
        "SELECT confirmation_status FROM bookings WHERE id = $1", booking_id
    )
    return bool(current == status)


async def pending_count(client: redis.asyncio.Redis, config: Config, group: str) -> int:
    summary = await client.xpending(stream_key(config.redis_prefix, "confirmations"), group)
    return int(summary["pending"])


@pytest.fixture
async def concert(api: Api, organizer: User) -> dict[str, Any]:
    return await api.create_event(organizer, title="Night Concert", capacity=50)


async def test_a_message_left_by_a_killed_consumer_is_claimed_by_another_and_recorded_once(
    api: Api, concert: dict[str, Any], customer: User, config: Config, pool: asyncpg.Pool
) -> None:
    config = config.replace(claim_idle_ms=300)
    client = api.app[REDIS]
    booking = await expect(await api.book(customer, concert), 201)
    assert await OutboxRelay(config, pool, client).relay_once() == 1

    stuck = StuckMailer()
    first = Confirmations(config, pool, client, stuck)
    killed = asyncio.create_task(first.run(asyncio.Event()))
    await asyncio.wait_for(stuck.called.wait(), 10)
    killed.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await killed
    assert await pending_count(client, config, "confirmations") == 1

    mailer = SimulatedMailer()
    second = Confirmations(config, pool, client, mailer)
    stopping = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        survivor = asyncio.create_task(second.run(stopping))
        await eventually(lambda: has_status(pool, booking["id"], "sent"))
        stopping.set()
        await survivor

    assert mailer.sent == 1
    rows = await pool.fetch("SELECT sent_at FROM notifications WHERE booking_id = $1",
                            booking["id"])
    assert len(rows) == 1 and rows[0]["sent_at"] is not None
    [claimed] = [line for line in logs if line["event"] == "message_claimed"]
    assert claimed["attempts"] == 2
    assert await pending_count(client, config, "confirmations") == 0


async def test_a_message_that_keeps_failing_is_dead_lettered_and_others_keep_flowing(
    api: Api, concert: dict[str, Any], config: Config, pool: asyncpg.Pool
) -> None:
    config = config.replace(max_attempts=3)
    client = api.app[REDIS]
    unlucky = await api.register()
    others = [await api.register() for _ in range(3)]
    supervisor = Supervisor([
        OutboxRelay(config, pool, client),
        Confirmations(config, pool, client, RefusingMailer(unlucky.email), retry_delay=0.05),
    ])
    supervisor.start()
    try:
        doomed = await expect(await api.book(unlucky, concert), 201)
        fine = [await expect(await api.book(other, concert), 201) for other in others]

        await eventually(lambda: has_status(pool, doomed["id"], "failed"))
        for booking in fine:
            await eventually(lambda b=booking: has_status(pool, b["id"], "sent"))
    finally:
        await supervisor.stop()

    dead = await client.xrange(dead_letter_key(config.redis_prefix, "confirmations"))
    assert len(dead) == 1
    _, fields = dead[0]
    assert fields["kind"] == "booking_confirmed"
    assert json.loads(fields["payload"]) == {"booking_id": doomed["id"]}
    assert fields["attempts"] == "3"
    assert "MailError" in fields["error"] and unlucky.email in fields["error"]
    assert fields["request_id"]
    assert await pending_count(client, config, "confirmations") == 0
    unsent = await pool.fetchval(
        "SELECT count(*) FROM notifications WHERE booking_id = $1 AND sent_at IS NULL",
        doomed["id"],
    )
    assert unsent == 1  # recorded, never sent: not shown to the user as a mail


async def test_the_configured_failure_rate_and_attempt_limit_apply_to_the_app_actors(
    make_api: Any, pool: asyncpg.Pool, config: Config
) -> None:
    api = await make_api(actors=True, mail_failure_rate=1.0, max_attempts=2)
    organizer = await api.register(role="organizer")
    customer = await api.register()
    event = await api.create_event(organizer)
    booking = await expect(await api.book(customer, event), 201)

    await eventually(lambda: has_status(pool, booking["id"], "failed"))
    dead = await api.app[REDIS].xrange(dead_letter_key(config.redis_prefix, "confirmations"))
    assert [fields["attempts"] for _, fields in dead] == ["2"]


# -- the supervisor --------------------------------------------------------------------


class Flaky:
    """Crashes on its first `crashes` runs, then works until stopped."""

    name = "flaky"

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.runs = 0

    async def run(self, stopping: asyncio.Event) -> None:
        self.runs += 1
        if self.runs <= self.crashes:
            raise RuntimeError(f"boom {self.runs}")
        await stopping.wait()


async def test_a_crashing_actor_is_restarted_with_growing_backoff_and_the_reason_logged() -> None:
    flaky = Flaky(crashes=3)
    supervisor = Supervisor([flaky], base_delay=0.02)
    with structlog.testing.capture_logs() as logs:
        supervisor.start()
        await eventually(lambda: flaky.runs == 4)
        await supervisor.stop()

    crashes = [line for line in logs if line["event"] == "actor_crashed"]
    assert [line["error"] for line in crashes] == [
        "RuntimeError('boom 1')", "RuntimeError('boom 2')", "RuntimeError('boom 3')"
    ]
    delays = [line["delay_s"] for line in logs if line["event"] == "actor_restarting"]
    assert len(delays) == 3
    for failures, delay in enumerate(delays, start=1):
        nominal = 0.02 * 2**failures
        assert nominal * 0.5 - 0.001 <= delay <= nominal * 1.5 + 0.001
    assert supervisor.restarts["flaky"] == 3
    assert flaky.runs == 4


async def test_build_actors_runs_every_kind_or_the_ones_named(
    api: Api, config: Config, pool: asyncpg.Pool
) -> None:
    client = api.app[REDIS]
    assert [a.name for a in build_actors(config, pool, client)] == list(ACTOR_NAMES)
    assert [a.name for a in build_actors(config, pool, client, ("confirmations",))] == [
        "confirmations"
    ]
    with pytest.raises(ValueError, match="unknown actors: mailman"):
        build_actors(config, pool, client, ("mailman",))


async def test_handled_messages_are_trimmed_so_the_stream_does_not_grow_forever(
    api: Api, config: Config, pool: asyncpg.Pool
) -> None:
    config = config.replace(claim_idle_ms=100)
    client = api.app[REDIS]
    stream = stream_key(config.redis_prefix, "confirmations")
    async with client.pipeline(transaction=False) as pipe:
        for n in range(250):
            pipe.xadd(stream, {"kind": "not_ours", "payload": json.dumps({"n": n})})
        await pipe.execute()
    actor = Confirmations(config, pool, client, SimulatedMailer())

    async def trimmed() -> bool:
        return bool(await client.xlen(stream) <= 100)

    stopping = asyncio.Event()
    task = asyncio.create_task(actor.run(stopping))
    try:
        await eventually(trimmed)
    finally:
        stopping.set()
        await task
    assert await pending_count(client, config, "confirmations") == 0


# -- consumers: listed while they run, forgotten when their process is gone ----------------


async def consumer_names(client: redis.asyncio.Redis, actor: Confirmations) -> set[str]:
    if not await client.exists(actor.stream):  # the actor has not made its group yet
        return set()
    return {c["name"] for c in await client.xinfo_consumers(actor.stream, actor.group)}


async def listed(client: redis.asyncio.Redis, actor: Confirmations) -> bool:
    return actor.consumer in await consumer_names(client, actor)


async def test_a_consumer_is_listed_from_its_start_before_any_message(
    api: Api, config: Config, pool: asyncpg.Pool
) -> None:
    client = api.app[REDIS]
    actor = Confirmations(config, pool, client, SimulatedMailer())
    stopping = asyncio.Event()
    running = asyncio.create_task(actor.run(stopping))
    try:
        await eventually(lambda: listed(client, actor), timeout=10)
    finally:
        stopping.set()
        await asyncio.wait_for(running, 10)
    # A clean stop leaves the group, heartbeat and all.
    assert actor.consumer not in await consumer_names(client, actor)
    assert not await client.exists(actor.heartbeat)


async def test_consumers_of_gone_processes_are_forgotten_but_not_live_or_holding_ones(
    api: Api, config: Config, pool: asyncpg.Pool
) -> None:
    config = config.replace(claim_idle_ms=100)  # gone after 1 s of silence
    client = api.app[REDIS]
    actor = Confirmations(config, pool, client, SimulatedMailer())
    await actor.ensure_group()
    await client.xgroup_createconsumer(actor.stream, actor.group, "gone-empty")
    await client.xgroup_createconsumer(actor.stream, actor.group, "alive")
    await client.set(heartbeat_key(config.redis_prefix, actor.topic, "alive"), "1")
    await client.xadd(actor.stream, {"kind": "booking_confirmed", "payload": "{}"})
    await client.xreadgroup(actor.group, "gone-holding", {actor.stream: ">"}, count=1)
    await asyncio.sleep(1.2)

    assert await actor.forget_gone_consumers() == ["gone-empty"]
    assert await consumer_names(client, actor) == {actor.consumer, "alive", "gone-holding"}
    # The one holding a message keeps it, to be claimed by a live consumer.
    assert (await client.xpending(actor.stream, actor.group))["pending"] == 1


async def test_keys_under_their_names_before_hash_tags_are_renamed_groups_and_all(
    api: Api, config: Config, pool: asyncpg.Pool
) -> None:
    client = api.app[REDIS]
    prefix = config.redis_prefix
    old_stream = f"{prefix}stream:confirmations"
    await client.xgroup_create(old_stream, "confirmations", id="0", mkstream=True)
    first = await client.xadd(old_stream, {"kind": "booking_confirmed", "payload": "{}"})
    await client.xadd(old_stream, {"kind": "booking_confirmed", "payload": "{}"})
    await client.xreadgroup("confirmations", "old-worker", {old_stream: ">"}, count=1)
    await client.hset(f"{prefix}failures:confirmations", first, 2)
    await client.xadd(f"{prefix}dead:confirmations", {"kind": "x", "error": "boom"})

    # Three processes start at once; each renames what is still under the old names.
    actors = [Confirmations(config, pool, client, SimulatedMailer()) for _ in range(3)]
    await asyncio.gather(*(actor.ensure_group() for actor in actors))

    assert not await client.exists(old_stream, f"{prefix}failures:confirmations",
                                   f"{prefix}dead:confirmations")
    stream = stream_key(config.redis_prefix, "confirmations")
    assert await client.xlen(stream) == 2
    [pending] = await client.xpending_range(stream, "confirmations", "-", "+", 10)
    assert (pending["message_id"], pending["consumer"]) == (first, "old-worker")
    assert await client.hget(actors[0].failures, first) == "2"
    [(_, letter)] = await client.xrange(dead_letter_key(config.redis_prefix, "confirmations"))
    assert letter["error"] == "boom"


async def test_an_old_name_written_after_the_rename_overwrites_nothing(
    api: Api, config: Config, pool: asyncpg.Pool
) -> None:
    client = api.app[REDIS]
    actor = Confirmations(config, pool, client, SimulatedMailer())
    await actor.ensure_group()
    await client.xadd(actor.stream, {"kind": "booking_confirmed", "payload": "{}"})
    old_stream = f"{config.redis_prefix}stream:confirmations"
    await client.xadd(old_stream, {"kind": "late", "payload": "{}"})

    await actor.ensure_group()

    assert await client.xlen(actor.stream) == 1
    assert await client.xlen(old_stream) == 1
