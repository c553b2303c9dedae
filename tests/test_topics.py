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


async def test_the_stored_procedures_write_exactly_the_known_topics(
    api: Api, pool: asyncpg.Pool, organizer: User, customer: User
) -> None:
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

    assert booked == cancelled == {topics.CONFIRMATIONS}
    assert updated == event_cancelled == {topics.NOTIFICATIONS}
    assert booked | cancelled | updated | event_cancelled == set(topics.TOPICS)


def test_every_topic_is_read_by_an_actor_of_its_name() -> None:
    assert {actor.topic for actor in STREAM_ACTORS} == set(topics.TOPICS)
    for actor in STREAM_ACTORS:
        assert actor.name == actor.topic
        assert actor.name in ACTOR_NAMES
