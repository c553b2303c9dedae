"""Browsing reads from a real streaming replica, and what a client sees while it lags.

The replica's replay is paused to make it lag on demand: what the primary commits
meanwhile is missing on the replica until replay resumes."""

from __future__ import annotations

from typing import Any

import asyncpg

from tests.client import Api, User, eventually, expect, metric, metric_becomes
from tests.replica.conftest import ReplicaPair


async def listed(api: Api, **query: str) -> tuple[list[str], str]:
    """The titles of the events listed, and the server the list came from."""
    answer = await api.get("/api/v1/events", params=query)
    body = await expect(answer, 200)
    return [event["title"] for event in body["items"]], answer.headers["X-Read-Source"]


async def test_browsing_reads_come_from_the_replica(
    api: Api, organizer: User, replica_pair: ReplicaPair, pool: asyncpg.Pool
) -> None:
    await api.create_event(organizer, title="Early show")
    await replica_pair.caught_up()
    async with replica_pair.replay_paused():
        await api.create_event(organizer, title="Late show")
        assert await pool.fetchval("SELECT count(*) FROM events") == 2
        assert await listed(api) == (["Early show"], "replica")
        assert await listed(api, q="show") == (["Early show"], "replica")
        answer = await api.get("/api/v1/events")
        assert 0 <= float(answer.headers["X-Read-Lag-Seconds"]) <= 10

    async def both_listed() -> bool:
        titles, _ = await listed(api)
        return sorted(titles) == ["Early show", "Late show"]

    await eventually(both_listed, timeout=10)


async def test_an_event_the_replica_lacks_is_read_from_the_primary(
    api: Api, organizer: User, replica_pair: ReplicaPair
) -> None:
    async with replica_pair.replay_paused():
        event = await api.create_event(organizer, title="Just published")
        answer = await api.get(f"/api/v1/events/{event['id']}")
        assert (await expect(answer, 200))["title"] == "Just published"
        assert answer.headers["X-Read-Source"] == "primary"
        unknown = await api.get("/api/v1/events/00000000-0000-4000-8000-000000000000")
        assert unknown.status == 404
    await metric_becomes(api, "eventbook_browse_reads_total", 2, timeout=5,
                         source="primary", reason="missing")


async def test_reads_go_to_the_primary_while_the_replica_lags_past_the_limit(
    make_api: Any, organizer: User, replica_pair: ReplicaPair
) -> None:
    api = await make_api(read_max_lag_seconds=0.5)
    event = await api.create_event(organizer, title="Before the pause")
    await replica_pair.caught_up()
    async with replica_pair.replay_paused():
        await api.create_event(organizer, title="During the pause")

        async def from_primary() -> bool:
            return (await listed(api))[1] == "primary"

        await eventually(from_primary, timeout=5)
        titles, _ = await listed(api)
        assert sorted(titles) == ["Before the pause", "During the pause"]
        one = await api.get(f"/api/v1/events/{event['id']}")
        assert one.headers["X-Read-Source"] == "primary"

        async def lag_reported() -> bool:
            return (await metric(api, "eventbook_replica_lag_seconds") or 0) > 0.5

        await eventually(lag_reported, timeout=5)

    async def from_replica() -> bool:
        return (await listed(api))[1] == "replica"

    await eventually(from_replica, timeout=5)
    titles, _ = await listed(api)
    assert sorted(titles) == ["Before the pause", "During the pause"]


async def test_bookings_and_organizer_views_are_fresh_while_the_replica_lags(
    api: Api, organizer: User, customer: User, replica_pair: ReplicaPair
) -> None:
    event = await api.create_event(organizer, capacity=10)
    await replica_pair.caught_up()
    async with replica_pair.replay_paused():
        booking = await expect(await api.book(customer, event, quantity=3), 201)
        assert (await expect(await api.get(f"/api/v1/bookings/{booking['id']}", customer),
                             200))["quantity"] == 3
        mine = await expect(await api.get("/api/v1/bookings", customer), 200)
        assert [b["id"] for b in mine["items"]] == [booking["id"]]
        attendees = await expect(
            await api.get(f"/api/v1/events/{event['id']}/attendees", organizer), 200
        )
        assert [a["booking_id"] for a in attendees["items"]] == [booking["id"]]

        # Anyone browsing may see the tickets left as they were, within the lag allowed;
        # the organizer reading their own event sees them as they are.
        public = await api.get(f"/api/v1/events/{event['id']}")
        assert (await expect(public, 200))["available_tickets"] == 10
        assert public.headers["X-Read-Source"] == "replica"
        own = await api.get(f"/api/v1/events/{event['id']}", organizer)
        assert (await expect(own, 200))["available_tickets"] == 7
        assert own.headers["X-Read-Source"] == "primary"
        own_list = await api.get(
            "/api/v1/events", organizer, params={"organizer_id": organizer.id}
        )
        assert [e["available_tickets"] for e in (await expect(own_list, 200))["items"]] == [7]
        assert own_list.headers["X-Read-Source"] == "primary"

        # A booking is decided on the primary: the tickets the replica still shows are
        # not there to book.
        answer = await api.book(customer, event, quantity=8)
        assert answer.status == 409
        assert (await answer.json())["available_tickets"] == 7


async def test_reads_are_answered_while_the_replica_is_down(
    api: Api, organizer: User, replica_pair: ReplicaPair
) -> None:
    event = await api.create_event(organizer, title="Still on")
    await replica_pair.caught_up()
    assert await listed(api) == (["Still on"], "replica")
    await replica_pair.stop_replica()
    try:
        assert await listed(api) == (["Still on"], "primary")
        assert await listed(api, q="still") == (["Still on"], "primary")
        one = await api.get(f"/api/v1/events/{event['id']}")
        assert (await expect(one, 200))["title"] == "Still on"
        assert one.headers["X-Read-Source"] == "primary"
        assert (await api.get("/readyz")).status == 200
    finally:
        await replica_pair.start_replica()

    async def from_replica() -> bool:
        return (await listed(api))[1] == "replica"

    await eventually(from_replica, timeout=10)
