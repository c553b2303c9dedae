"""The reconciler puts back what Redis lost (confirmations, event changes, dead letters an
outage caused) exactly once, and leaves alone what a queue still holds."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import redis.asyncio
import redis.exceptions
import structlog
from prometheus_client.parser import text_string_to_metric_families

from eventbook import db
from eventbook.actors import Supervisor, build_actors
from eventbook.actors.mailer import MailError, SimulatedMailer
from eventbook.actors.notifications import Notifications
from eventbook.actors.reconciler import Findings, reconcile
from eventbook.actors.relay import OutboxRelay
from eventbook.actors.stream import dead_letter_key, stream_key
from eventbook.config import Config
from eventbook.metrics import Metrics
from eventbook.outages import dead_letter_from_outage
from tests.client import Api, User, eventually, expect, metric, metric_becomes
from tests.faults.invariants import assert_check_reports_nothing, assert_each_confirmed_once
from tests.processes import environment, run
from tests.seed import (
    insert_attendees,
    insert_event,
    insert_holds,
    insert_unconfirmed_booking,
    insert_users,
    insert_webhook_endpoint,
)
from tests.test_webhooks_delivery import register
from tests.webhook_receivers import receiving

HOUR = 3600


@pytest.fixture
async def client(config: Config) -> AsyncIterator[redis.asyncio.Redis]:
    assert config.redis_url is not None
    client = redis.asyncio.Redis.from_url(config.redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def event(pool: asyncpg.Pool) -> uuid.UUID:
    return await insert_event(pool, capacity=100)


async def lost_bookings(
    pool: asyncpg.Pool, event: uuid.UUID, count: int, age_seconds: float = HOUR,
    confirmation_status: str = "pending",
) -> list[uuid.UUID]:
    return [
        await insert_unconfirmed_booking(pool, event, user, age_seconds, confirmation_status)
        for user in await insert_users(pool, count)
    ]


async def reconcile_now(
    pool: asyncpg.Pool, client: redis.asyncio.Redis, config: Config, after: float = 60,
    **options: Any,
) -> Findings | None:
    return await reconcile(pool, client, config.redis_prefix, after, **options)


@contextlib.asynccontextmanager
async def running(
    config: Config, pool: asyncpg.Pool, client: redis.asyncio.Redis, *names: str
) -> AsyncIterator[None]:
    """The actors named, in this process, until the block ends."""
    supervisor = Supervisor(build_actors(config, pool, client, names))
    supervisor.start()
    try:
        yield
    finally:
        await supervisor.stop()


async def confirmation_outbox(pool: asyncpg.Pool) -> list[tuple[str, str]]:
    """(booking id, request id) of every booking_confirmed outbox row."""
    rows = await pool.fetch(
        "SELECT payload ->> 'booking_id' AS booking_id, request_id FROM outbox"
        " WHERE topic = 'confirmations' AND kind = 'booking_confirmed' ORDER BY id"
    )
    return [(row["booking_id"], row["request_id"]) for row in rows]


async def queue_confirmation(pool: asyncpg.Pool, booking: uuid.UUID) -> None:
    """The outbox row book_tickets writes for `booking`."""
    await pool.execute(
        "INSERT INTO outbox (topic, kind, payload, request_id) VALUES"
        " ('confirmations', 'booking_confirmed', jsonb_build_object('booking_id', $1::uuid),"
        " 'req-' || $1::text)",
        booking,
    )


async def all_sent(pool: asyncpg.Pool, bookings: list[uuid.UUID]) -> bool:
    statuses = await pool.fetch(
        "SELECT confirmation_status FROM bookings WHERE id = ANY($1::uuid[])", bookings
    )
    return [row["confirmation_status"] for row in statuses] == ["sent"] * len(bookings)


# -- confirmations ---------------------------------------------------------------------


async def test_a_booking_whose_confirmation_was_lost_is_requeued_once_and_mailed_once(
    config: Config, pool: asyncpg.Pool, client: redis.asyncio.Redis, event: uuid.UUID
) -> None:
    [booking] = await lost_bookings(pool, event, 1)

    done = await reconcile_now(pool, client, config)
    assert done is not None
    assert [item["booking_id"] for item in done.confirmations] == [str(booking)]
    [(queued, request_id)] = await confirmation_outbox(pool)
    assert queued == str(booking) and request_id.startswith("reconcile-")
    assert done.confirmations[0]["request_id"] == request_id
    assert not await reconcile_now(pool, client, config), "its outbox row is there now"

    async with running(config, pool, client, "relay", "confirmations"):
        await eventually(lambda: all_sent(pool, [booking]), timeout=30)
        assert not await reconcile_now(pool, client, config), "confirmed: nothing to do"
    await assert_each_confirmed_once(pool, [booking])


async def test_a_booking_whose_message_waits_in_the_outbox_or_the_stream_is_left_alone(
    config: Config, pool: asyncpg.Pool, client: redis.asyncio.Redis, event: uuid.UUID
) -> None:
    handled, delivered, undelivered, in_outbox = await lost_bookings(pool, event, 4)
    stream = stream_key(config.redis_prefix, "confirmations")
    await client.xgroup_create(stream, "confirmations", id="0", mkstream=True)
    relay = OutboxRelay(config, pool, client)

    async def relayed(booking: uuid.UUID) -> None:
        await queue_confirmation(pool, booking)
        assert await relay.relay_once() == 1

    async def read_one() -> str:
        [[_, [(entry_id, _)]]] = await client.xreadgroup(
            "confirmations", "someone", {stream: ">"}, count=1
        )
        return str(entry_id)

    # Acknowledged (handled), yet the booking is still pending: that message is done with.
    await relayed(handled)
    await client.xack(stream, "confirmations", await read_one())
    await relayed(delivered)
    await read_one()  # delivered to a consumer, not acknowledged
    await relayed(undelivered)
    await queue_confirmation(pool, in_outbox)

    done = await reconcile_now(pool, client, config)
    assert done is not None
    assert [item["booking_id"] for item in done.confirmations] == [str(handled)]


async def test_an_entry_in_a_stream_whose_group_redis_lost_is_waiting_not_lost(
    config: Config, pool: asyncpg.Pool, client: redis.asyncio.Redis, event: uuid.UUID
) -> None:
    """After FLUSHALL the relay recreates the stream before a consumer recreates its
    group; the group then reads the stream from its start."""
    [booking] = await lost_bookings(pool, event, 1)
    await queue_confirmation(pool, booking)
    assert await OutboxRelay(config, pool, client).relay_once() == 1

    assert not await reconcile_now(pool, client, config)
    assert await confirmation_outbox(pool) == []


async def test_a_booking_younger_than_the_window_is_left_alone(
    config: Config, pool: asyncpg.Pool, client: redis.asyncio.Redis, event: uuid.UUID
) -> None:
    [young] = await lost_bookings(pool, event, 1, age_seconds=30)
    [old] = await lost_bookings(pool, event, 1, age_seconds=90)

    done = await reconcile_now(pool, client, config, after=60)
    assert done is not None
    assert [item["booking_id"] for item in done.confirmations] == [str(old)]
    assert str(young) not in {booking for booking, _ in await confirmation_outbox(pool)}


async def test_passes_run_at_once_requeue_each_booking_once(
    config: Config, pool: asyncpg.Pool, client: redis.asyncio.Redis, event: uuid.UUID
) -> None:
    bookings = await lost_bookings(pool, event, 5)

    passes = await asyncio.gather(*(reconcile_now(pool, client, config) for _ in range(4)))

    requeued = [item["booking_id"] for done in passes if done for item in done.confirmations]
    assert sorted(requeued) == sorted(map(str, bookings))
    assert sorted(booking for booking, _ in await confirmation_outbox(pool)) == sorted(requeued)


async def test_a_pass_skips_while_another_holds_the_lock_and_a_waiting_one_runs_after(
    config: Config, pool: asyncpg.Pool, client: redis.asyncio.Redis, event: uuid.UUID
) -> None:
    [booking] = await lost_bookings(pool, event, 1)
    async with pool.acquire() as conn:
        other = conn.transaction()
        await other.start()
        assert await conn.fetchval(db.query("reconcile_lock"), False)

        assert await reconcile_now(pool, client, config) is None
        waiting = asyncio.create_task(reconcile_now(pool, client, config, wait=True))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        assert await confirmation_outbox(pool) == []
        await other.commit()

    done = await asyncio.wait_for(waiting, 10)
    assert done is not None
    assert [item["booking_id"] for item in done.confirmations] == [str(booking)]


async def test_the_reconciler_runs_with_the_other_actors_and_its_work_can_be_followed(
    make_api: Any, pool: asyncpg.Pool, event: uuid.UUID
) -> None:
    [booking] = await lost_bookings(pool, event, 1)
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        api = await make_api(actors=True, reconcile_after_seconds=1, reconcile_interval_seconds=1)
        await eventually(lambda: all_sent(pool, [booking]), timeout=30)

    [requeued] = [line for line in logs if line["event"] == "confirmation_requeued"]
    assert requeued["booking_id"] == str(booking) and requeued["event_id"] == str(event)
    assert requeued["request_id"].startswith("reconcile-")
    [sent] = [line for line in logs if line["event"] == "confirmation_sent"]
    assert sent["request_id"] == requeued["request_id"]
    [summary] = [line for line in logs if line["event"] == "reconciled"]
    assert (summary["confirmations"], summary["announcements"], summary["dead_letters"]) == (
        1, 0, 0,
    )
    await metric_becomes(api, "eventbook_reconciled_total", 1, kind="confirmation")
    assert await metric(api, "eventbook_reconciled_total", kind="dead_letter") == 0
    await assert_each_confirmed_once(pool, [booking])


# -- waiting-list offers ---------------------------------------------------------------


async def open_offers(pool: asyncpg.Pool, event: uuid.UUID, count: int,
                      age_seconds: float = HOUR) -> list[uuid.UUID]:
    """`count` customers wait for a sold-out event and its tickets come back: each gets an
    offer (a hold) made `age_seconds` ago, whose message was relayed, then lost by Redis.
    Their holds."""
    await pool.execute("UPDATE events SET capacity = $2, available_tickets = $2 WHERE id = $1",
                       event, count)
    await pool.execute("UPDATE ticket_types SET quota = NULL WHERE event_id = $1", event)
    buyers = await insert_users(pool, count)
    await insert_attendees(pool, event, buyers)
    for user in await insert_users(pool, count):
        assert await pool.fetchval("SELECT outcome FROM join_waitlist($1, NULL, $2, 1)",
                                   event, user) == "created"
    for buyer in buyers:
        booking = await pool.fetchval("SELECT id FROM bookings WHERE user_id = $1", buyer)
        assert await pool.fetchval("SELECT outcome FROM cancel_booking($1, $2, 'test')",
                                   booking, buyer) == "cancelled"
    await pool.execute("DELETE FROM outbox")
    holds = await pool.fetch(
        "UPDATE waitlist_entries SET offered_at = now() - make_interval(secs => $2)"
        " WHERE event_id = $1 AND status = 'offered' RETURNING hold_id, seq", event, age_seconds,
    )
    return [row["hold_id"] for row in sorted(holds, key=lambda row: row["seq"])]


async def offer_outbox(pool: asyncpg.Pool) -> list[tuple[str, str, str]]:
    """(hold id, entry id, request id) of every waitlist_offer outbox row."""
    rows = await pool.fetch(
        "SELECT payload ->> 'hold_id' AS hold_id, payload ->> 'entry_id' AS entry_id,"
        " request_id FROM outbox WHERE kind = 'waitlist_offer' ORDER BY id"
    )
    return [(row["hold_id"], row["entry_id"], row["request_id"]) for row in rows]


async def offers_mailed(pool: asyncpg.Pool, holds: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    rows = await pool.fetch(
        "SELECT hold_id, count(*) AS mails FROM notifications WHERE kind = 'waitlist_offer'"
        " AND sent_at IS NOT NULL AND hold_id = ANY($1::uuid[]) GROUP BY hold_id", holds,
    )
    return {row["hold_id"]: row["mails"] for row in rows}


async def test_an_offer_whose_mail_message_was_lost_is_requeued_once_and_mailed_once(
    config: Config, pool: asyncpg.Pool, client: redis.asyncio.Redis, event: uuid.UUID
) -> None:
    [hold] = await open_offers(pool, event, 1)

    done = await reconcile_now(pool, client, config)
    assert done is not None
    assert [item["hold_id"] for item in done.offers] == [str(hold)]
    [(queued, entry, request_id)] = await offer_outbox(pool)
    assert queued == str(hold) and request_id.startswith("reconcile-")
    assert entry == str(await pool.fetchval(
        "SELECT id FROM waitlist_entries WHERE hold_id = $1", hold))
    assert done.offers[0]["request_id"] == request_id
    assert not await reconcile_now(pool, client, config), "its outbox row is there now"

    async with running(config, pool, client, "relay", "confirmations"):
        await eventually(lambda: offers_mailed(pool, [hold]), timeout=30)
        assert not await reconcile_now(pool, client, config), "mailed: nothing to do"
    assert await offers_mailed(pool, [hold]) == {hold: 1}


async def test_an_offer_mailed_ended_young_or_whose_message_waits_is_left_alone(
    config: Config, pool: asyncpg.Pool, client: redis.asyncio.Redis, event: uuid.UUID
) -> None:
    lost, mailed, confirmed, expired, in_stream, in_outbox = await open_offers(pool, event, 6)
    [young] = await open_offers(pool, await insert_event(pool), 1, age_seconds=30)
    for hold in (in_stream, in_outbox):
        await pool.execute(
            "INSERT INTO outbox (topic, kind, payload) SELECT 'confirmations', 'waitlist_offer',"
            " jsonb_build_object('hold_id', hold_id, 'entry_id', id) FROM waitlist_entries"
            " WHERE hold_id = $1", hold,
        )
        if hold == in_stream:
            assert await OutboxRelay(config, pool, client).relay_once() == 1
    await pool.execute(
        "INSERT INTO notifications (user_id, kind, event_id, hold_id, recipient, subject, body,"
        " sent_at) SELECT h.user_id, 'waitlist_offer', h.event_id, h.id, 'x@example.com',"
        " 's', 'b', now() FROM holds h WHERE h.id = $1", mailed,
    )
    user = await pool.fetchval("SELECT user_id FROM holds WHERE id = $1", confirmed)
    assert await pool.fetchval("SELECT outcome FROM confirm_hold($1, $2, NULL, 'test')",
                               confirmed, user) == "confirmed"
    await pool.execute("UPDATE holds SET expires_at = now() WHERE id = $1", expired)

    done = await reconcile_now(pool, client, config, after=60)
    assert done is not None
    assert [item["hold_id"] for item in done.offers] == [str(lost)]
    assert str(young) not in {hold for hold, _, _ in await offer_outbox(pool)}


# -- announcements ---------------------------------------------------------------------


async def changed_event(
    api: Api, pool: asyncpg.Pool, organizer: User, attendees: int
) -> tuple[dict[str, Any], list[uuid.UUID]]:
    """An event with attendees whose title just changed (version 2): its expand message
    waits in the outbox."""
    event = await api.create_event(organizer, capacity=attendees * 2)
    users = await insert_users(pool, attendees)
    await insert_attendees(pool, event["id"], users)
    answer = await api.patch(f"/api/v1/events/{event['id']}", organizer,
                             json={"title": "Moved"})
    assert answer.status == 200
    return event, users


async def told_once_each(pool: asyncpg.Pool, event: dict[str, Any], version: int,
                         users: list[uuid.UUID]) -> bool:
    rows = await pool.fetch(
        "SELECT user_id, count(*) AS mails FROM notifications WHERE event_id = $1::uuid"
        " AND event_version = $2 AND sent_at IS NOT NULL GROUP BY user_id",
        event["id"], version,
    )
    return {row["user_id"]: row["mails"] for row in rows} == dict.fromkeys(users, 1)


async def finished(pool: asyncpg.Pool, event: dict[str, Any], version: int) -> bool:
    return await pool.fetchval(
        "SELECT finished_at IS NOT NULL FROM announcements WHERE event_id = $1::uuid"
        " AND version = $2", event["id"], version,
    ) is True


async def expand_and_deliver_first_page(
    config: Config, pool: asyncpg.Pool, client: redis.asyncio.Redis
) -> None:
    """Relay the expand message, expand it in pages of 2, deliver page 0 only: the other
    pages' deliver messages wait in the stream."""
    assert await OutboxRelay(config, pool, client).relay_once() == 1
    fanout = Notifications(config, pool, client, SimulatedMailer(), page_size=2)
    await fanout.ensure_group()
    [expand] = await fanout.fetch(1)
    await fanout.process(expand)
    [first_page] = await fanout.fetch(1)
    assert json.loads(first_page.fields["payload"])["page"] == 0
    await fanout.process(first_page)


async def test_an_event_change_whose_expand_message_was_lost_is_resumed_and_tells_everyone_once(
    api: Api, config: Config, pool: asyncpg.Pool, client: redis.asyncio.Redis,
    organizer: User,
) -> None:
    event, attendees = await changed_event(api, pool, organizer, 5)
    # Relayed, then lost by Redis.
    await pool.execute("DELETE FROM outbox WHERE topic = 'notifications'")

    done = await reconcile_now(pool, client, config, after=0)
    assert done is not None
    [item] = done.announcements
    assert (item["event_id"], item["version"], item["action"]) == (event["id"], 2, "expand")
    row = await pool.fetchrow("SELECT kind, payload, request_id FROM outbox")
    assert row["kind"] == "event_updated"
    assert row["payload"] == {"event_id": event["id"], "version": 2}
    assert row["request_id"] == item["request_id"]

    async with running(config, pool, client, "relay", "notifications"):
        await eventually(lambda: finished(pool, event, 2), timeout=30)
    assert await told_once_each(pool, event, 2, attendees)
    assert not await reconcile_now(pool, client, config, after=0)


async def test_an_event_change_whose_page_messages_were_lost_delivers_the_rest_once(
    api: Api, config: Config, pool: asyncpg.Pool, client: redis.asyncio.Redis,
    organizer: User,
) -> None:
    event, attendees = await changed_event(api, pool, organizer, 5)
    await expand_and_deliver_first_page(config, pool, client)
    await client.delete(stream_key(config.redis_prefix, "notifications"))  # pages 1, 2 lost

    done = await reconcile_now(pool, client, config, after=0)
    assert done is not None
    [item] = done.announcements
    assert item["action"] == "deliver"
    assert [page["page"] for page in item["pages"]] == [1, 2]

    async with running(config, pool, client, "notifications"):
        await eventually(lambda: finished(pool, event, 2), timeout=30)
    assert await told_once_each(pool, event, 2, attendees)


async def test_an_event_change_delivered_but_never_marked_finished_is_finished(
    api: Api, config: Config, pool: asyncpg.Pool, client: redis.asyncio.Redis,
    organizer: User,
) -> None:
    """The last page was delivered, then its message was lost before the announcement
    was marked finished."""
    event, attendees = await changed_event(api, pool, organizer, 2)
    async with running(config, pool, client, "relay", "notifications"):
        await eventually(lambda: finished(pool, event, 2), timeout=30)
    await pool.execute("UPDATE announcements SET finished_at = NULL")

    done = await reconcile_now(pool, client, config, after=0)
    assert done is not None
    assert [(item["event_id"], item["action"]) for item in done.announcements] == [
        (event["id"], "finish")
    ]
    assert await finished(pool, event, 2)
    assert await told_once_each(pool, event, 2, attendees)


async def test_an_event_change_whose_messages_wait_in_the_outbox_or_the_stream_is_left_alone(
    api: Api, config: Config, pool: asyncpg.Pool, client: redis.asyncio.Redis,
    organizer: User,
) -> None:
    await changed_event(api, pool, organizer, 5)
    assert not await reconcile_now(pool, client, config, after=0), "in the outbox"
    await expand_and_deliver_first_page(config, pool, client)
    assert not await reconcile_now(pool, client, config, after=0), "pages 1, 2 in the stream"

    await changed_event(api, pool, organizer, 3)
    assert await OutboxRelay(config, pool, client).relay_once() == 1
    assert not await reconcile_now(pool, client, config, after=0), "expand in the stream"


async def test_an_event_change_whose_message_was_given_up_on_is_left_to_the_operator(
    api: Api, config: Config, pool: asyncpg.Pool, client: redis.asyncio.Redis,
    organizer: User,
) -> None:
    """Resuming it would retry, every pass, a message that failed for its own sake."""
    event, _ = await changed_event(api, pool, organizer, 2)
    [row] = await pool.fetch("DELETE FROM outbox RETURNING kind, payload, request_id")
    await client.xadd(dead_letter_key(config.redis_prefix, "notifications"), {
        "kind": row["kind"], "payload": json.dumps(row["payload"]),
        "request_id": row["request_id"], "error": repr(KeyError("title")),
        "cause": "message", "attempts": "5",
    })

    assert not await reconcile_now(pool, client, config, after=0)
    assert not await finished(pool, event, 2)


# -- dead letters ----------------------------------------------------------------------


def dead_letter(config: Config, booking: uuid.UUID, error: str,
                cause: str | None = None) -> dict[str, str]:
    """A booking_confirmed message as the runtime dead-letters it."""
    fields = {
        "kind": "booking_confirmed", "payload": json.dumps({"booking_id": str(booking)}),
        "request_id": f"req-{booking}", "outbox_id": "1",
        "created_at": dt.datetime.now(dt.UTC).isoformat(), "error": error, "attempts": "5",
        "stream": stream_key(config.redis_prefix, "confirmations"), "message_id": "1-0",
        "consumer": "gone", "failed_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    return fields if cause is None else fields | {"cause": cause}


async def test_dead_letters_an_outage_caused_are_replayed_and_end_sent_the_others_stay(
    config: Config, pool: asyncpg.Pool, client: redis.asyncio.Redis, event: uuid.UUID
) -> None:
    outage_legacy, outage, refused, poison = await lost_bookings(
        pool, event, 4, confirmation_status="failed"
    )
    key = dead_letter_key(config.redis_prefix, "confirmations")
    written = {
        booking: dead_letter(config, booking, error, cause)
        for booking, error, cause in [
            (outage_legacy, repr(ConnectionRefusedError(
                111, "Connect call failed ('127.0.0.1', 5432)")), None),
            (outage, "MailError('SMTP 127.0.0.1:25: Connection lost')", "outage"),
            (refused, repr(MailError("simulated mail server refused the mail")), None),
            (poison, repr(TimeoutError()), "message"),
        ]
    }
    letters = {booking: await client.xadd(key, fields) for booking, fields in written.items()}

    done = await reconcile_now(pool, client, config)
    assert done is not None
    assert [(item["id"], item["booking_id"]) for item in done.dead_letters] == [
        (letters[outage_legacy], str(outage_legacy)), (letters[outage], str(outage)),
    ]
    assert [entry_id for entry_id, _ in await client.xrange(key)] == [
        letters[refused], letters[poison],
    ]
    # Back on the stream as the relay first wrote them, without what the runtime added.
    replayed = await client.xrange(stream_key(config.redis_prefix, "confirmations"))
    assert [fields for _, fields in replayed] == [
        {name: value for name, value in written[booking].items()
         if name in ("kind", "payload", "request_id", "outbox_id", "created_at")}
        for booking in (outage_legacy, outage)
    ]

    async with running(config, pool, client, "confirmations"):
        await eventually(lambda: all_sent(pool, [outage_legacy, outage]), timeout=30)
    await assert_each_confirmed_once(pool, [outage_legacy, outage])
    assert not await all_sent(pool, [refused]) and not await all_sent(pool, [poison])


@pytest.mark.parametrize(("letter", "outage"), [
    ({"error": repr(ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"))},
     True),
    ({"error": repr(ConnectionResetError(104, "Connection reset by peer"))}, True),
    ({"error": repr(asyncpg.exceptions.CannotConnectNowError(
        "the database system is shutting down"))}, True),
    ({"error": repr(asyncpg.exceptions.AdminShutdownError(
        "terminating connection due to administrator command"))}, True),
    ({"error": repr(asyncpg.exceptions.ConnectionDoesNotExistError(
        "connection was closed in the middle of operation"))}, True),
    ({"error": repr(asyncpg.exceptions.InternalClientError(
        "cannot switch to state 12; another operation (2) is in progress"))}, True),
    ({"error": repr(redis.exceptions.ConnectionError(
        "Error 111 connecting to 127.0.0.1:6379. Connection refused."))}, True),
    ({"error": repr(redis.exceptions.TimeoutError("Timeout reading from socket"))}, True),
    ({"error": repr(TimeoutError())}, True),
    ({"error": repr(MailError("SMTP mail:25: Error connecting to mail on port 25: [Errno 111]"
                              " Connect call failed ('10.0.0.1', 25)"))}, True),
    ({"error": repr(MailError("simulated mail server refused the mail"))}, False),
    ({"error": repr(KeyError("booking_id"))}, False),
    ({"error": repr(LookupError("no announcement for event x version 2"))}, False),
    ({"error": "exceeded max attempts: consumers stopped before finishing it"}, False),
    ({"error": repr(TimeoutError()), "cause": "message"}, False),
    ({"error": repr(KeyError("booking_id")), "cause": "outage"}, True),
])
def test_a_dead_letter_is_an_outage_by_its_cause_or_else_by_a_connection_error(
    letter: dict[str, str], outage: bool
) -> None:
    assert dead_letter_from_outage(letter) is outage


# -- commands --------------------------------------------------------------------------


def eventbook_json(config: Config, *args: str) -> tuple[int, Any]:
    result = run([*args, "--json"], environment(config))
    return result.returncode, json.loads(result.stdout)


async def test_check_lists_what_a_pass_would_put_back_and_reconcile_puts_it_back(
    api: Api, config: Config, pool: asyncpg.Pool, client: redis.asyncio.Redis,
    organizer: User, event: uuid.UUID,
) -> None:
    [booking] = await lost_bookings(pool, event, 1)
    changed, attendees = await changed_event(api, pool, organizer, 3)
    await pool.execute("DELETE FROM outbox WHERE topic = 'notifications'")
    [failed] = await lost_bookings(pool, event, 1, confirmation_status="failed")
    letter = await client.xadd(
        dead_letter_key(config.redis_prefix, "confirmations"),
        dead_letter(config, failed, repr(ConnectionResetError(104, "reset"))),
    )

    code, report = eventbook_json(config, "check")
    assert code == 1
    assert [row["booking_id"] for row in report["confirmations_to_requeue"]] == [str(booking)]
    assert report["announcements_to_resume"] == [], "the change is younger than 300 s"
    assert [row["id"] for row in report["dead_letters_to_replay"]] == [letter]
    code, report = eventbook_json(config, "check", "--reconcile-after", "0")
    assert [(row["event_id"], row["action"]) for row in report["announcements_to_resume"]] == [
        (changed["id"], "expand")
    ]
    text = run(["check", "--reconcile-after", "0"], environment(config))
    assert text.returncode == 1
    assert "(the reconciler requeues them): 1" in text.stdout

    code, done = eventbook_json(config, "reconcile", "--reconcile-after", "0")
    assert code == 0
    assert [item["booking_id"] for item in done["confirmations"]] == [str(booking)]
    assert [item["event_id"] for item in done["announcements"]] == [changed["id"]]
    assert [item["id"] for item in done["dead_letters"]] == [letter]
    _, report = eventbook_json(config, "check", "--reconcile-after", "0")
    assert (report["confirmations_to_requeue"], report["announcements_to_resume"],
            report["dead_letters_to_replay"]) == ([], [], [])

    async with running(config, pool, client, "relay", "confirmations", "notifications"):
        await eventually(lambda: all_sent(pool, [booking, failed]), timeout=30)
        await eventually(lambda: finished(pool, changed, 2), timeout=30)
    await assert_each_confirmed_once(pool, [booking, failed])
    assert await told_once_each(pool, changed, 2, attendees)
    assert_check_reports_nothing(config)
    again = run(["reconcile"], environment(config))
    assert again.returncode == 0
    assert "requeued 0 confirmation(s)" in again.stdout


async def test_check_lists_an_offer_whose_mail_was_lost_and_reconcile_requeues_it(
    config: Config, pool: asyncpg.Pool, event: uuid.UUID
) -> None:
    [hold] = await open_offers(pool, event, 1)

    code, report = eventbook_json(config, "check")
    assert code == 1
    assert [row["hold_id"] for row in report["offers_to_requeue"]] == [str(hold)]
    text = run(["reconcile"], environment(config))
    assert text.returncode == 0
    assert "requeued 1 waiting-list offer(s)" in text.stdout
    assert f"hold {hold}" in text.stdout
    _, report = eventbook_json(config, "check")
    assert report["offers_to_requeue"] == []


# -- webhooks --------------------------------------------------------------------------


@pytest.fixture
async def hooks_api(make_api: Any) -> Api:
    """The HTTP API (no actors) taking loopback http webhook URLs."""
    return await make_api(webhook_allow_http=True, webhook_allow_private=True)


def webhook_config(config: Config) -> Config:
    return config.replace(webhook_allow_http=True, webhook_allow_private=True)


async def lose_webhooks_messages(pool: asyncpg.Pool) -> list[str]:
    """The relay moved the webhooks outbox rows to Redis, which lost them: their kinds."""
    rows = await pool.fetch("DELETE FROM outbox WHERE topic = 'webhooks' RETURNING kind")
    return [row["kind"] for row in rows]


async def webhooks_outbox(pool: asyncpg.Pool) -> list[tuple[str, str, dt.datetime]]:
    """(kind, request id, date) of every webhooks outbox row."""
    rows = await pool.fetch("SELECT kind, request_id, created_at FROM outbox"
                            " WHERE topic = 'webhooks' ORDER BY id")
    return [(row["kind"], row["request_id"], row["created_at"]) for row in rows]


def reconciled(metrics: Metrics, kind: str) -> float | None:
    """eventbook_reconciled_total{kind} as `metrics` shows it."""
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            if sample.name == "eventbook_reconciled_total" and sample.labels == {"kind": kind}:
                return float(sample.value)
    return None


async def test_a_booking_whose_webhook_redis_lost_reaches_the_endpoint_once_dated_then(
    hooks_api: Api, config: Config, pool: asyncpg.Pool, client: redis.asyncio.Redis,
    organizer: User, customer: User,
) -> None:
    api = hooks_api
    event = await api.create_event(organizer)
    async with receiving() as receiver:
        endpoint = await register(api, organizer, receiver.url)
        receiver.secrets.append(endpoint["secret"])
        booking = await expect(await api.book(customer, event), 201)
        assert await lose_webhooks_messages(pool) == ["booking.created"]

        metrics = Metrics()
        done = await reconcile_now(pool, client, config, after=0, metrics=metrics)
        assert done is not None
        [item] = done.webhooks
        assert reconciled(metrics, "webhook") == 1
        assert item["message_id"] == f"msg_booking.created_{booking['id']}"
        [(kind, request_id, dated)] = await webhooks_outbox(pool)
        assert kind == "booking.created" and request_id == item["request_id"]
        assert dated == dt.datetime.fromisoformat(booking["created_at"])
        assert not await reconcile_now(pool, client, config, after=0), "its row is there"

        async with running(webhook_config(config), pool, client, "relay", "webhooks"):
            await eventually(lambda: receiver.verified, timeout=15)
            assert not await reconcile_now(pool, client, config, after=0), "delivered"
    [got] = receiver.received
    assert got.message_id == item["message_id"]
    assert got.verified["data"]["id"] == booking["id"]
    assert got.verified["timestamp"] == dated.astimezone(dt.UTC).isoformat()


async def test_every_kind_of_change_whose_webhook_was_lost_is_delivered_once(
    hooks_api: Api, config: Config, pool: asyncpg.Pool, client: redis.asyncio.Redis,
    organizer: User, customer: User,
) -> None:
    """Bookings made and cancelled by their customer, a hold expired, an event changed
    in a way attendees are told of, and cancelled."""
    api = hooks_api
    event = await api.create_event(organizer)
    async with receiving() as receiver:
        endpoint = await register(api, organizer, receiver.url)
        receiver.secrets.append(endpoint["secret"])
        kept = await expect(await api.book(customer, event), 201)
        cancelled = await expect(await api.book(customer, event), 201)
        await expect(await api.post(f"/api/v1/bookings/{cancelled['id']}/cancel", customer),
                     200)
        [hold] = await insert_holds(pool, event["id"], await insert_users(pool, 1), 60)
        await pool.execute("UPDATE holds SET expires_at = now() - interval '1 second'"
                           " WHERE id = $1", hold)
        await pool.execute("SELECT expire_holds(100)")
        await expect(await api.patch(f"/api/v1/events/{event['id']}", organizer,
                                     json={"title": "Moved"}), 200)
        await expect(await api.post(f"/api/v1/events/{event['id']}/cancel", organizer), 200)
        lost = await lose_webhooks_messages(pool)

        done = await reconcile_now(pool, client, config, after=0)
        assert done is not None
        assert sorted(item["kind"] for item in done.webhooks) == sorted(lost) == sorted([
            "booking.created", "booking.created", "booking.cancelled", "hold.expired",
            "event.updated", "event.cancelled",
        ])
        expected = {
            f"msg_booking.created_{kept['id']}", f"msg_booking.created_{cancelled['id']}",
            f"msg_booking.cancelled_{cancelled['id']}", f"msg_hold.expired_{hold}",
            f"msg_event.updated_{event['id']}_2", f"msg_event.cancelled_{event['id']}_3",
        }
        assert {item["message_id"] for item in done.webhooks} == expected

        async with running(webhook_config(config), pool, client, "relay", "webhooks"):
            await eventually(lambda: len(receiver.verified) == len(expected), timeout=15)
            assert not await reconcile_now(pool, client, config, after=0)
    assert sorted(got.message_id for got in receiver.received) == sorted(expected)


async def test_a_change_no_endpoint_missed_or_whose_message_waits_is_left_alone(
    hooks_api: Api, config: Config, pool: asyncpg.Pool, client: redis.asyncio.Redis,
    organizer: User, customer: User,
) -> None:
    """Left alone: a booking whose message waits in the stream, one made before the
    endpoint was, one of an event the endpoint does not name, one of an organizer with
    no endpoint, and any younger than the window; only the booking whose message was
    lost is put back."""
    api = hooks_api
    other_organizer = await api.register(role="organizer")
    event, unnamed, unwatched = [await api.create_event(who) for who in
                                 (organizer, organizer, other_organizer)]
    await expect(await api.book(customer, event), 201)
    await register(api, organizer, "http://127.0.0.1:9/hook", event_ids=[event["id"]])
    await expect(await api.book(customer, unnamed), 201)
    await expect(await api.book(customer, unwatched), 201)
    await expect(await api.book(customer, event), 201)
    assert await OutboxRelay(config, pool, client).relay_once() >= 1
    assert [fields["kind"] for _, fields in await client.xrange(
        stream_key(config.redis_prefix, "webhooks"))] == ["booking.created"]
    lost = await expect(await api.book(customer, event), 201)
    assert await lose_webhooks_messages(pool) == ["booking.created"]

    assert not await reconcile_now(pool, client, config, after=60), "all younger than 60 s"
    done = await reconcile_now(pool, client, config, after=0)
    assert done is not None
    assert [item["message_id"] for item in done.webhooks] == [
        f"msg_booking.created_{lost['id']}"
    ]


async def test_check_lists_a_change_whose_webhook_was_lost_and_reconcile_requeues_it(
    config: Config, pool: asyncpg.Pool, event: uuid.UUID
) -> None:
    organizer = await pool.fetchval("SELECT organizer_id FROM events WHERE id = $1", event)
    await insert_webhook_endpoint(pool, organizer,
                                  created_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
    [booking] = await lost_bookings(pool, event, 1)
    await pool.execute("UPDATE bookings SET confirmation_status = 'sent', confirmed_at = now()"
                       " WHERE id = $1", booking)

    code, report = eventbook_json(config, "check")
    assert code == 1
    [finding] = report["webhooks_to_requeue"]
    assert finding["message_id"] == f"msg_booking.created_{booking}"
    text = run(["reconcile"], environment(config))
    assert text.returncode == 0
    assert "requeued 1 webhook message(s)" in text.stdout
    assert f"booking.created msg_booking.created_{booking} event {event}" in text.stdout
    _, report = eventbook_json(config, "check")
    assert report["webhooks_to_requeue"] == []
