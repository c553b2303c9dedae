"""Redis loses its data (FLUSHALL; a restart without its files) while customers book
through a real `eventbook serve --no-actors` and `eventbook worker`."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Awaitable, Callable

import aiohttp
import asyncpg
import pytest
import redis.asyncio

from eventbook.actors.stream import stream_key
from eventbook.config import Config
from eventbook.embedded import EmbeddedServices
from eventbook.metrics import WatchedStream, stream_state
from tests.client import eventually
from tests.faults.conftest import Processes
from tests.faults.invariants import (
    all_confirmed,
    assert_check_reports_nothing,
    assert_each_confirmed_once,
    queues,
)
from tests.faults.load import Account, Answer, book, created, seed_accounts, seed_events
from tests.processes import environment

# The mail server is slower than the bookings come (64 mails in flight, 3 s each: 21 a
# second, against some 50 bookings a second), so entries wait in the stream when Redis
# loses them.
MAIL_LATENCY_MS = 3000
CLIENTS = 6
PAUSE_BETWEEN_BOOKINGS = 0.1
# Entries waiting undelivered when Redis loses its data: work that is lost for sure.
LAG_AT_LOSS = 20
BOOKING_AFTER_LOSS_SECONDS = 3.0


async def flush(private: EmbeddedServices, client: redis.asyncio.Redis) -> None:
    await client.flushall()


async def restart_empty(private: EmbeddedServices, client: redis.asyncio.Redis) -> None:
    private.stop_redis()
    for path in private.redis_dir.iterdir():
        if path.name != "redis.log":  # the AOF (file or directory) and any RDB snapshot
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    private.start_redis()


async def lag_reaches(client: redis.asyncio.Redis, config: Config, count: int) -> bool:
    """At least `count` confirmation entries wait undelivered to any consumer."""
    watched = WatchedStream(stream_key(config.redis_prefix, "confirmations"), "confirmations")
    return (await stream_state(client, watched)).lag >= count


def every_message_handled(config: Config) -> bool:
    return all((row["pending"], row["lag"], row["dead_letters"]) == (0, 0, 0)
               for row in queues(config))


def requeued(log: str) -> list[str]:
    """The bookings the reconciler put back, from a process's JSON log lines."""
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return [line["booking_id"] for line in lines if line["event"] == "confirmation_requeued"]


@pytest.mark.parametrize("lose", [flush, restart_empty], ids=["flushall", "restart_empty"])
async def test_bookings_whose_messages_redis_lost_are_each_confirmed_once(
    config: Config, pool: asyncpg.Pool, private: EmbeddedServices, processes: Processes,
    lose: Callable[[EmbeddedServices, redis.asyncio.Redis], Awaitable[None]],
) -> None:
    """Customers book steadily; Redis loses every stream, group and dead letter while
    confirmations wait in the stream (FLUSHALL, or a restart on an empty data dir).
    Bookings keep being answered 201. The actors recreate their consumer groups, and the
    reconciler (after 2 s) requeues each pending booking whose message no queue holds
    any more: every booking answered 201, before and after the loss, ends with exactly
    one booking_confirmed mail, stamped sent; every stream message is handled; `eventbook
    check` finds nothing."""
    config = config.replace(redis_url=private.start_redis(), claim_idle_ms=5000)
    server = processes.serve(environment(config), "--no-actors")
    worker = processes.worker(environment(
        config, EVENTBOOK_MAIL_LATENCY_MS=str(MAIL_LATENCY_MS),
        EVENTBOOK_RECONCILE_AFTER_SECONDS="2", EVENTBOOK_RECONCILE_INTERVAL_SECONDS="1",
    ))
    customers = await seed_accounts(pool, config, CLIENTS)
    [event] = await seed_events(pool, 100_000)
    await server.wait_ready()
    worker.wait_for_output("reconciler_started")
    assert config.redis_url is not None
    client = redis.asyncio.Redis.from_url(config.redis_url, decode_responses=True)

    answers: list[Answer] = []
    stop = asyncio.Event()

    async def keep_booking(session: aiohttp.ClientSession, customer: Account) -> None:
        while not stop.is_set():
            answers.append(await book(session, server.url, customer, event))
            await asyncio.sleep(PAUSE_BETWEEN_BOOKINGS)

    try:
        async with aiohttp.ClientSession() as session:
            clients = [asyncio.create_task(keep_booking(session, customer))
                       for customer in customers]
            try:
                await eventually(lambda: lag_reaches(client, config, LAG_AT_LOSS), timeout=60)
                await lose(private, client)
                await asyncio.sleep(BOOKING_AFTER_LOSS_SECONDS)
            finally:
                stop.set()
                await asyncio.gather(*clients)
    finally:
        await client.aclose()

    assert {answer.status for answer in answers} == {201}, [
        answer for answer in answers if answer.status != 201
    ][:5]
    answered = created(answers)
    await eventually(lambda: all_confirmed(pool, answered), timeout=90, interval=0.5)
    await assert_each_confirmed_once(pool, answered)
    put_back = requeued(worker.output)
    assert put_back, "Redis lost no confirmation the reconciler had to requeue"
    assert set(put_back) <= {str(booking) for booking in answered}
    await eventually(lambda: every_message_handled(config), timeout=60, interval=1)
    assert worker.stop() == 0
    assert server.stop() == 0
    assert_check_reports_nothing(config)
