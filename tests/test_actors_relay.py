"""The outbox relay: every row reaches its stream once, promptly, even across a Redis outage."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.exceptions

from eventbook.actors.relay import OutboxRelay
from eventbook.actors.stream import stream_key
from eventbook.config import Config
from eventbook.embedded import EmbeddedServices
from eventbook.keys import REDIS, SUPERVISOR
from tests.client import Api, eventually, expect


async def add_outbox_rows(pool: asyncpg.Pool, count: int) -> None:
    await pool.execute(
        "INSERT INTO outbox (topic, kind, payload, request_id)"
        " SELECT 'confirmations', 'test', jsonb_build_object('n', n), 'req-' || n"
        " FROM generate_series(1, $1) AS n",
        count,
    )


async def outbox_size(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM outbox"))


async def test_several_relays_move_every_row_exactly_once(
    api: Api, config: Config, pool: asyncpg.Pool
) -> None:
    await add_outbox_rows(pool, 600)
    client = api.app[REDIS]
    relays = [OutboxRelay(config, pool, client, batch_size=40) for _ in range(3)]

    async def drain(relay: OutboxRelay) -> int:
        moved = 0
        while batch := await relay.relay_once():
            moved += batch
        return moved

    counts = await asyncio.gather(*(drain(relay) for relay in relays))

    assert sum(counts) == 600
    assert await outbox_size(pool) == 0
    entries = await client.xrange(stream_key(config.redis_prefix, "confirmations"))
    outbox_ids = [int(fields["outbox_id"]) for _, fields in entries]
    assert sorted(outbox_ids) == sorted(set(outbox_ids)) and len(outbox_ids) == 600
    first = entries[0][1]
    assert first["kind"] == "test"
    assert first["request_id"] == f"req-{json.loads(first['payload'])['n']}"
    assert first["created_at"]


async def test_a_topic_redis_refuses_stays_in_the_outbox_and_the_others_go_once(
    api: Api, config: Config, pool: asyncpg.Pool
) -> None:
    await add_outbox_rows(pool, 3)
    await pool.execute(
        "INSERT INTO outbox (topic, kind, payload) VALUES ('webhooks', 'test', '{}')"
    )
    client = api.app[REDIS]
    relay = OutboxRelay(config, pool, client)
    webhooks = stream_key(config.redis_prefix, "webhooks")
    await client.set(webhooks, "not a stream")  # every XADD to it fails (WRONGTYPE)

    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        await relay.relay_once()
    assert await pool.fetchval("SELECT array_agg(topic) FROM outbox") == ["webhooks"]
    confirmations = stream_key(config.redis_prefix, "confirmations")
    assert await client.xlen(confirmations) == 3

    await client.delete(webhooks)
    assert await relay.relay_once() == 1
    assert await outbox_size(pool) == 0
    assert await client.xlen(confirmations) == 3
    assert await client.xlen(webhooks) == 1


async def test_the_relay_wakes_on_notify_without_waiting_for_its_poll(
    api: Api, config: Config, pool: asyncpg.Pool
) -> None:
    client = api.app[REDIS]
    relay = OutboxRelay(config, pool, client, poll_interval=60)
    stopping = asyncio.Event()
    task = asyncio.create_task(relay.run(stopping))
    try:
        await asyncio.sleep(0.3)  # listening, and past its first (empty) pass
        started = time.monotonic()
        await add_outbox_rows(pool, 1)
        await eventually(lambda: client.xlen(stream_key(config.redis_prefix, "confirmations")))
        assert time.monotonic() - started < 2
    finally:
        stopping.set()
        await asyncio.wait_for(task, 5)


async def test_bookings_made_while_redis_is_down_are_each_confirmed_once_it_is_back(
    make_api: Any, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    private = EmbeddedServices(tmp_path)
    redis_url = private.start_redis()
    try:
        api = await make_api(actors=True, redis_url=redis_url)
        # Restarts back off up to 30 s by default; the outage here is short.
        api.app[SUPERVISOR].max_delay = 1.0
        organizer = await api.register(role="organizer")
        customers = [await api.register() for _ in range(3)]
        event = await api.create_event(organizer)

        private.stop_redis()
        bookings = [
            await expect(await api.book(customer, event), 201)
            for customer in customers
            for _ in range(2)
        ]
        await asyncio.sleep(1.0)  # the relay tries, fails, and the rows stay put
        assert await outbox_size(pool) == len(bookings)

        private.start_redis()
        ids = [booking["id"] for booking in bookings]

        async def all_sent() -> bool:
            sent = await pool.fetchval(
                "SELECT count(*) FROM bookings"
                " WHERE id = ANY($1::uuid[]) AND confirmation_status = 'sent'",
                ids,
            )
            return bool(sent == len(ids))

        await eventually(all_sent, timeout=60)
    finally:
        private.stop_redis()

    per_booking = await pool.fetch(
        "SELECT booking_id, count(*) AS mails, count(sent_at) AS sent FROM notifications"
        " GROUP BY booking_id"
    )
    assert len(per_booking) == len(bookings)
    assert all(row["mails"] == 1 and row["sent"] == 1 for row in per_booking)
    assert await outbox_size(pool) == 0
