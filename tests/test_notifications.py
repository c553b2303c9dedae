"""GET /api/v1/me/notifications: the mails sent to me, newest first, and nobody else's."""

from __future__ import annotations

from typing import Any

import asyncpg

from tests.client import Api, User, eventually, expect


async def mails_of(api: Api, user: User, **query: Any) -> dict[str, Any]:
    return await expect(await api.get("/api/v1/me/notifications", user, params=query), 200)


async def mails_sent(api: Api, user: User, count: int) -> dict[str, Any]:
    """The user's list once it shows `count` mails."""

    async def listed() -> dict[str, Any] | None:
        body = await mails_of(api, user)
        return body if len(body["items"]) == count else None

    return await eventually(listed)


async def test_my_mails_are_listed_newest_first_and_only_mine(
    make_api: Any, pool: asyncpg.Pool
) -> None:
    api = await make_api(actors=True)
    organizer = await api.register(role="organizer")
    me, someone_else = await api.register(), await api.register()
    first = await api.create_event(organizer, title="First Night")
    second = await api.create_event(organizer, title="Second Night")
    # One at a time, so the mails' order is the bookings' order.
    mine = []
    for event in (first, second):
        mine.append(await expect(await api.book(me, event), 201))
        await mails_sent(api, me, len(mine))
    theirs = await expect(await api.book(someone_else, first), 201)
    await expect(await api.post(f"/api/v1/bookings/{mine[0]['id']}/cancel", me), 200)

    listed = await mails_sent(api, me, 3)

    items = listed["items"]
    assert [(item["kind"], item["booking_id"]) for item in items] == [
        ("booking_cancelled", mine[0]["id"]),
        ("booking_confirmed", mine[1]["id"]),
        ("booking_confirmed", mine[0]["id"]),
    ]
    assert items[1]["subject"] == "Booking confirmed: Second Night"
    assert items[1]["event_id"] == second["id"]
    assert set(items[0]) == {"id", "kind", "event_id", "booking_id", "hold_id", "subject", "body",
                             "created_at", "sent_at"}
    assert all(item["sent_at"] for item in items)
    assert listed["next_cursor"] is None
    other = await mails_sent(api, someone_else, 1)
    assert [item["booking_id"] for item in other["items"]] == [theirs["id"]]


async def test_a_mail_not_yet_sent_is_not_listed(
    api: Api, organizer: User, customer: User, pool: asyncpg.Pool
) -> None:
    event = await api.create_event(organizer)
    booking = await expect(await api.book(customer, event), 201)
    await pool.execute(
        "INSERT INTO notifications (user_id, kind, event_id, booking_id, recipient, subject, body)"
        " VALUES ($1, 'booking_confirmed', $2, $3, $4, 'Booking confirmed', 'in flight')",
        customer.id, event["id"], booking["id"], customer.email,
    )
    assert (await mails_of(api, customer))["items"] == []


async def test_the_list_pages_with_a_cursor(
    api: Api, organizer: User, customer: User, pool: asyncpg.Pool
) -> None:
    event = await api.create_event(organizer)
    await pool.execute(
        "INSERT INTO notifications"
        " (user_id, kind, event_id, event_version, recipient, subject, body, created_at, sent_at)"
        " SELECT $1, 'event_updated', $2, n, $3, 'Changed #' || n, 'body',"
        "        now() - make_interval(mins => 10 - n), now()"
        " FROM generate_series(1, 5) AS n",
        customer.id, event["id"], customer.email,
    )

    first = await mails_of(api, customer, limit=2)
    second = await mails_of(api, customer, limit=2, cursor=first["next_cursor"])
    third = await mails_of(api, customer, limit=2, cursor=second["next_cursor"])

    subjects = [item["subject"] for page in (first, second, third) for item in page["items"]]
    assert subjects == ["Changed #5", "Changed #4", "Changed #3", "Changed #2", "Changed #1"]
    assert third["next_cursor"] is None


async def test_the_list_needs_a_signed_in_user_and_a_sane_limit(
    api: Api, customer: User
) -> None:
    assert (await api.get("/api/v1/me/notifications")).status == 401
    answer = await api.get("/api/v1/me/notifications", customer, params={"limit": 101})
    assert answer.status == 422
    answer = await api.get("/api/v1/me/notifications", customer, params={"cursor": "bogus"})
    assert answer.status == 422
