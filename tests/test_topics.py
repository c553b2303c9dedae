"""The topics of eventbook.topics are the words the stored procedures write to the
outbox, and each is read by an actor: SQL and Python are tied by more than spelling."""

from __future__ import annotations

import asyncpg

from eventbook import topics
from eventbook.actors import ACTOR_NAMES, STREAM_ACTORS
from tests.client import Api, User, expect


async def written_topics(pool: asyncpg.Pool) -> set[str]:
    rows = await pool.fetch("DELETE FROM outbox RETURNING topic")
    return {row["topic"] for row in rows}


async def topics_of_each_change(
    api: Api, pool: asyncpg.Pool, organizer: User, customer: User
) -> list[set[str]]:
    """The topics written by booking, cancelling the booking, changing the event and
    cancelling it, change by change."""
    event = await api.create_event(organizer)
    booking = await expect(await api.book(customer, event), 201)
    booked = await written_topics(pool)
    await expect(await api.post(f"/api/v1/bookings/{booking['id']}/cancel", customer), 200)
    cancelled = await written_topics(pool)
    await expect(await api.book(customer, event), 201)
    await written_topics(pool)
    await expect(
        await api.patch(f"/api/v1/events/{event['id']}", organizer, json={"title": "Moved"}),
        200,
    )
    updated = await written_topics(pool)
    await expect(await api.post(f"/api/v1/events/{event['id']}/cancel", organizer), 200)
    event_cancelled = await written_topics(pool)
    return [booked, cancelled, updated, event_cancelled]


async def test_the_stored_procedures_write_exactly_the_known_topics(
    api: Api, pool: asyncpg.Pool, organizer: User, customer: User
) -> None:
    without_webhooks = await topics_of_each_change(api, pool, organizer, customer)
    listening = await api.register(role="organizer")
    await expect(
        await api.post("/api/v1/webhooks", listening, json={"url": "https://1.1.1.1/hooks"}),
        201,
    )
    with_webhooks = await topics_of_each_change(api, pool, listening, customer)

    mailed = [{topics.CONFIRMATIONS}, {topics.CONFIRMATIONS}, {topics.NOTIFICATIONS},
              {topics.NOTIFICATIONS}]
    assert without_webhooks == mailed
    assert with_webhooks == [written | {topics.WEBHOOKS} for written in mailed]
    assert set().union(*with_webhooks) == set(topics.TOPICS)


def test_every_topic_is_read_by_an_actor_of_its_name() -> None:
    assert {actor.topic for actor in STREAM_ACTORS} == set(topics.TOPICS)
    for actor in STREAM_ACTORS:
        assert actor.name == actor.topic
        assert actor.name in ACTOR_NAMES
