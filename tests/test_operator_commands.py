"""`eventbook queues` and `eventbook dlq` against real Redis and PostgreSQL."""

from __future__ import annotations

import json

import asyncpg
import redis.asyncio

from eventbook.actors.stream import dead_letter_key
from eventbook.config import Config
from tests.client import Api, eventually
from tests.processes import environment, run


def eventbook_json(config: Config, *args: str) -> object:
    result = run([*args, "--json"], environment(config))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def dead_lettered_booking(make_api, pool: asyncpg.Pool) -> tuple[Api, str]:
    """A booking whose confirmation failed every attempt and went to the dead letters."""
    failing = await make_api(actors=True, mail_failure_rate=1.0, max_attempts=2)
    organizer = await failing.register(role="organizer")
    customer = await failing.register()
    event = await failing.create_event(organizer)
    booking = await (await failing.book(customer, event)).json()

    async def failed() -> bool:
        status = await pool.fetchval(
            "SELECT confirmation_status FROM bookings WHERE id = $1::uuid", booking["id"]
        )
        return status == "failed"

    await eventually(failed, timeout=60)
    await failing.client.close()
    return failing, booking["id"]


async def test_queues_reports_streams_groups_and_the_outbox(
    make_api, config: Config, pool: asyncpg.Pool
) -> None:
    await dead_lettered_booking(make_api, pool)
    await pool.execute(
        "INSERT INTO outbox (topic, kind, payload) VALUES ('confirmations', 'x', '{}')"
    )
    report = eventbook_json(config, "queues")
    rows = {(row["stream"], row["group"]): row for row in report["streams"]}
    confirmations = rows[("confirmations", "confirmations")]
    assert confirmations["dead_letters"] == 1
    assert confirmations["pending"] == 0
    assert report["outbox"]["backlog"] == 1

    text = run(["queues"], environment(config))
    assert text.returncode == 0
    assert "confirmations" in text.stdout and "outbox: 1 row(s) waiting" in text.stdout


async def test_a_replayed_dead_letter_is_handled_and_leaves_the_dead_letters(
    make_api, config: Config, pool: asyncpg.Pool
) -> None:
    _, booking_id = await dead_lettered_booking(make_api, pool)
    [letter] = eventbook_json(config, "dlq", "list")
    assert letter["kind"] == "booking_confirmed"
    assert letter["attempts"] == "2"
    assert "refused" in letter["error"]
    shown = eventbook_json(config, "dlq", "show", letter["id"])
    assert shown["payload"] == letter["payload"]

    replayed = eventbook_json(config, "dlq", "replay", letter["id"])
    assert [item["id"] for item in replayed] == [letter["id"]]
    assert eventbook_json(config, "dlq", "list") == []

    await make_api(actors=True)  # the mail server works again

    async def confirmed() -> bool:
        status = await pool.fetchval(
            "SELECT confirmation_status FROM bookings WHERE id = $1::uuid", booking_id
        )
        return status == "sent"

    await eventually(confirmed, timeout=60)
    sent = await pool.fetchval(
        "SELECT count(*) FROM notifications WHERE booking_id = $1::uuid AND sent_at IS NOT NULL",
        booking_id,
    )
    assert sent == 1


async def test_purge_asks_first_and_deletes_with_yes(config: Config) -> None:
    client = redis.asyncio.Redis.from_url(config.redis_url, decode_responses=True)
    key = dead_letter_key(config.redis_prefix, "confirmations")
    await client.xadd(key, {"kind": "booking_confirmed", "payload": "{}", "error": "boom"})
    try:
        refused = run(["dlq", "purge"], environment(config), input="")
        assert refused.returncode == 2
        assert await client.xlen(key) == 1
        assert eventbook_json(config, "dlq", "purge", "--yes") == {"purged": 1}
        assert await client.xlen(key) == 0
    finally:
        await client.aclose()


def test_replay_needs_ids_or_all(config: Config) -> None:
    result = run(["dlq", "replay"], environment(config))
    assert result.returncode == 2
    assert "--all" in result.stderr
