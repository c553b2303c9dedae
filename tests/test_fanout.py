"""Event changes reach every attendee exactly once, resume after a crash, and coalesce."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import asyncpg

from eventbook import queues
from eventbook.actors.mailer import SimulatedMailer
from eventbook.actors.notifications import Notifications
from eventbook.actors.stream import Message
from eventbook.config import Config
from eventbook.connections import redis_client
from eventbook.keys import REDIS
from tests.client import Api, User, eventually
from tests.conftest import Inbox
from tests.processes import Process, environment
from tests.seed import insert_attendees, insert_users


async def announcements(api: Api, organizer: User, event: dict) -> list[dict]:
    answer = await api.get(f"/api/v1/events/{event['id']}/announcements", organizer)
    assert answer.status == 200, await answer.text()
    return (await answer.json())["items"]


async def finished(api: Api, organizer: User, event: dict, version: int) -> dict | None:
    for item in await announcements(api, organizer, event):
        if item["version"] == version and item["finished_at"] is not None:
            return item
    return None


async def mails_per_attendee(pool: asyncpg.Pool, event: dict, version: int) -> dict:
    rows = await pool.fetch(
        "SELECT user_id, count(*) AS n FROM notifications"
        " WHERE event_id = $1::uuid AND event_version = $2 AND sent_at IS NOT NULL"
        " GROUP BY user_id",
        event["id"], version,
    )
    return {str(row["user_id"]): row["n"] for row in rows}


def once_each(users) -> dict:
    return {str(user): 1 for user in users}


async def event_with_attendees(api: Api, pool: asyncpg.Pool, organizer: User, count: int):
    event = await api.create_event(organizer, capacity=count * 2)
    attendees = await insert_users(pool, count)
    await insert_attendees(pool, event["id"], attendees)
    return event, attendees


async def test_a_change_reaches_each_of_2000_attendees_exactly_once(
    make_api, pool: asyncpg.Pool
) -> None:
    api = await make_api(actors=True)
    organizer = await api.register(role="organizer")
    event, attendees = await event_with_attendees(api, pool, organizer, 2000)

    answer = await api.patch(f"/api/v1/events/{event['id']}", organizer,
                             json={"title": "Moved to a bigger hall"})
    assert answer.status == 200
    assert (await answer.json())["version"] == 2

    done = await eventually(lambda: finished(api, organizer, event, 2), timeout=90)
    assert done["kind"] == "event_updated"
    assert done["recipients_total"] == 2000
    assert done["delivered"] == 2000
    assert done["failed"] == 0
    assert await mails_per_attendee(pool, event, 2) == once_each(attendees)


async def test_an_attendee_with_several_bookings_gets_one_mail(
    make_api, pool: asyncpg.Pool
) -> None:
    api = await make_api(actors=True)
    organizer = await api.register(role="organizer")
    event, attendees = await event_with_attendees(api, pool, organizer, 3)
    await insert_attendees(pool, event["id"], attendees[:1], quantity=2)

    await api.patch(f"/api/v1/events/{event['id']}", organizer, json={"venue": "Hall B"})
    done = await eventually(lambda: finished(api, organizer, event, 2))
    assert done["delivered"] == 3
    assert await mails_per_attendee(pool, event, 2) == once_each(attendees)


async def test_the_attendee_reads_the_change_in_their_notifications(make_api, pool) -> None:
    api = await make_api(actors=True)
    organizer = await api.register(role="organizer")
    customer = await api.register()
    event = await api.create_event(organizer, venue="Hall A")
    assert (await api.book(customer, event)).status == 201

    await api.patch(f"/api/v1/events/{event['id']}", organizer, json={"venue": "Hall B"})
    await eventually(lambda: finished(api, organizer, event, 2))
    answer = await api.get("/api/v1/me/notifications", customer)
    mails = [m for m in (await answer.json())["items"] if m["kind"] == "event_updated"]
    assert len(mails) == 1
    assert "Hall B" in mails[0]["body"]
    assert mails[0]["event_id"] == event["id"]
    assert mails[0]["booking_id"] is None


async def test_a_capacity_only_change_notifies_nobody(make_api, pool) -> None:
    api = await make_api(actors=True)
    organizer = await api.register(role="organizer")
    event, _ = await event_with_attendees(api, pool, organizer, 5)
    answer = await api.patch(f"/api/v1/events/{event['id']}", organizer, json={"capacity": 50})
    assert answer.status == 200
    assert await announcements(api, organizer, event) == []


async def test_a_cancelled_event_tells_every_attendee_it_is_cancelled(
    make_api, pool: asyncpg.Pool
) -> None:
    api = await make_api(actors=True)
    organizer = await api.register(role="organizer")
    event, _ = await event_with_attendees(api, pool, organizer, 50)

    answer = await api.post(f"/api/v1/events/{event['id']}/cancel", organizer)
    assert answer.status == 200
    done = await eventually(lambda: finished(api, organizer, event, 2))
    assert done["kind"] == "event_cancelled"
    assert done["delivered"] == 50
    bodies = await pool.fetch(
        "SELECT subject, body FROM notifications WHERE event_id = $1::uuid"
        " AND kind = 'event_cancelled'", event["id"],
    )
    assert len(bodies) == 50
    assert all("cancelled" in row["body"] and "Cancelled" in row["subject"] for row in bodies)


async def test_a_booking_made_after_a_change_is_not_sent_that_change(
    make_api, pool: asyncpg.Pool
) -> None:
    quiet = await make_api()  # no actors yet: the change waits in the outbox
    organizer = await quiet.register(role="organizer")
    early, late = await quiet.register(), await quiet.register()
    event = await quiet.create_event(organizer)
    assert (await quiet.book(early, event)).status == 201
    await quiet.patch(f"/api/v1/events/{event['id']}", organizer, json={"title": "Renamed"})
    assert (await quiet.book(late, event)).status == 201

    api = await make_api(actors=True)
    done = await eventually(lambda: finished(api, organizer, event, 2))
    assert done["delivered"] == 1
    assert await mails_per_attendee(pool, event, 2) == once_each([early.id])


async def test_quick_changes_during_a_fanout_coalesce_to_the_newest(
    make_api, pool: asyncpg.Pool
) -> None:
    # Slow mail, so the first fan-out is still running when the next changes arrive.
    api = await make_api(actors=True, mail_latency_ms=20, fanout_concurrency=40)
    organizer = await api.register(role="organizer")
    event, attendees = await event_with_attendees(api, pool, organizer, 3000)
    path = f"/api/v1/events/{event['id']}"

    await api.patch(path, organizer, json={"title": "Second title"})
    await eventually(lambda: mails_per_attendee(pool, event, 2), timeout=30, interval=0.02)
    for title in ("Third title", "Fourth title", "Final title"):
        assert (await api.patch(path, organizer, json={"title": title})).status == 200
    final = (await api.get_event(event))["version"]
    assert final == 5

    await eventually(lambda: finished(api, organizer, event, final), timeout=120)
    rows = await pool.fetch(
        "SELECT DISTINCT ON (user_id) user_id, event_version, subject FROM notifications"
        " WHERE event_id = $1::uuid AND sent_at IS NOT NULL"
        " ORDER BY user_id, created_at DESC, event_version DESC",
        event["id"],
    )
    last_mail = {row["user_id"]: row for row in rows}
    assert set(last_mail) == set(attendees)
    assert {row["event_version"] for row in last_mail.values()} == {final}
    assert all("Final title" in row["subject"] for row in last_mail.values())
    per_version = await pool.fetchval(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM notifications WHERE event_id = $1::uuid"
        " GROUP BY user_id, event_version) counts",
        event["id"],
    )
    assert per_version == 1
    # Coalesced: far fewer mails than one per attendee per change.
    total = await pool.fetchval(
        "SELECT count(*) FROM notifications WHERE event_id = $1::uuid", event["id"]
    )
    assert total < 3000 * 4


async def test_a_worker_killed_mid_fanout_resumes_and_tells_everyone_once(
    make_api, pool: asyncpg.Pool, config: Config, tmp_path: Path
) -> None:
    api = await make_api()
    organizer = await api.register(role="organizer")
    event, attendees = await event_with_attendees(api, pool, organizer, 10_000)
    await api.patch(f"/api/v1/events/{event['id']}", organizer, json={"title": "New title"})

    env = environment(
        config, EVENTBOOK_MAIL_LATENCY_MS="10", EVENTBOOK_FANOUT_CONCURRENCY="50",
        EVENTBOOK_CLAIM_IDLE_MS="1000",
    )
    first = Process(["worker"], env, tmp_path / "first.log")
    try:
        await eventually(
            lambda: _delivered_at_least(pool, event, 2000), timeout=90, interval=0.05
        )
    finally:
        first.stop(signal.SIGKILL)
    told_before_restart = len(await mails_per_attendee(pool, event, 2))
    assert told_before_restart < 10_000, "the kill came too late to test a resume"

    second = Process(["worker"], env, tmp_path / "second.log")
    try:
        done = await eventually(lambda: finished(api, organizer, event, 2), timeout=120)
    finally:
        second.stop()
    assert done["delivered"] == 10_000
    assert await mails_per_attendee(pool, event, 2) == once_each(attendees)


async def _delivered_at_least(pool: asyncpg.Pool, event: dict, count: int) -> bool:
    delivered = await pool.fetchval(
        "SELECT count(*) FROM notifications WHERE event_id = $1::uuid AND event_version = 2",
        event["id"],
    )
    return delivered >= count


# -- given up on -----------------------------------------------------------------------


async def test_attendees_of_a_page_given_up_on_are_counted_failed_and_a_replay_tells_them(
    make_api, pool: asyncpg.Pool, smtp_server: tuple[str, Inbox], config: Config
) -> None:
    url, inbox = smtp_server
    api = await make_api(actors=True, smtp_url=url, max_attempts=2)
    organizer = await api.register(role="organizer")
    event, attendees = await event_with_attendees(api, pool, organizer, 5)
    # A title with a line break, as stored before such titles were refused: every mail
    # about the event fails to build (the subject is a header) and the page is given up.
    await pool.execute(
        "UPDATE events SET title = 'Gala\r\nBcc: everyone@example.com' WHERE id = $1::uuid",
        event["id"],
    )
    answer = await api.patch(f"/api/v1/events/{event['id']}", organizer, json={"venue": "B"})
    assert answer.status == 200

    done = await eventually(lambda: finished(api, organizer, event, 2), timeout=60)
    assert (done["recipients_total"], done["delivered"], done["failed"]) == (5, 0, 5)
    assert inbox.mails == []

    # The operator fixes the title and replays the dead letter: everyone is told once.
    await pool.execute(
        "UPDATE events SET title = 'Gala' WHERE id = $1::uuid", event["id"]
    )
    # The page is counted failed (the dead-letter hook) just before its dead letter is
    # written: the operator replays it once it is listed.
    await eventually(lambda: queues.dead_letters(api.app[REDIS], config.redis_prefix,
                                                 "notifications"))
    [replayed] = await queues.replay(api.app[REDIS], config.redis_prefix, None, "notifications")
    assert replayed["topic"] == "notifications"

    async def all_delivered() -> dict | None:
        [item] = [a for a in await announcements(api, organizer, event) if a["version"] == 2]
        return item if item["delivered"] == 5 else None

    item = await eventually(all_delivered, timeout=30)
    assert item["failed"] == 0
    assert await mails_per_attendee(pool, event, 2) == once_each(attendees)
    assert sorted(rcpt for rcpts, _ in inbox.mails for rcpt in rcpts) == sorted(
        await pool.fetchval(
            "SELECT array_agg(email) FROM users WHERE id = ANY($1::uuid[])", attendees
        )
    )


async def test_an_expansion_given_up_on_counts_every_attendee_failed_until_replayed(
    make_api, pool: asyncpg.Pool, config: Config
) -> None:
    quiet = await make_api()  # no actors: the change waits in the outbox
    organizer = await quiet.register(role="organizer")
    event, attendees = await event_with_attendees(quiet, pool, organizer, 30)
    await quiet.patch(f"/api/v1/events/{event['id']}", organizer, json={"venue": "Hall B"})

    client = redis_client(config)
    try:
        fanout = Notifications(config, pool, client, SimulatedMailer(), page_size=10)
        expand = Message("1-0", {
            "kind": "event_updated",
            "payload": json.dumps({"event_id": event["id"], "version": 2}),
        }, attempts=5)
        await fanout.on_dead_letter(expand, "RuntimeError('boom')")
        await fanout.on_dead_letter(expand, "RuntimeError('boom')")  # the hook may run twice
    finally:
        await client.aclose()
    [item] = await announcements(quiet, organizer, event)
    assert (item["recipients_total"], item["delivered"], item["failed"]) == (30, 0, 30)
    assert item["finished_at"] is None

    # Replayed (here: relayed from the outbox for the first time), it tells everyone.
    api = await make_api(actors=True)
    done = await eventually(lambda: finished(api, organizer, event, 2), timeout=60)
    assert (done["delivered"], done["failed"]) == (30, 0)
    assert await mails_per_attendee(pool, event, 2) == once_each(attendees)
