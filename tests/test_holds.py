"""Checkout holds through the API: take, read, confirm, release, and expiry."""

from __future__ import annotations

import asyncpg

from tests.client import Api, expect


async def test_a_hold_takes_tickets_until_it_is_confirmed_into_a_booking(
    api: Api, organizer, customer
) -> None:
    event = await api.create_event(organizer, capacity=10)
    vip = await api.add_ticket_type(organizer, event, name="VIP", price_cents=5000, quota=2)
    [general, _] = await api.ticket_types(event)
    held = await expect(await api.hold(customer, event, items=[
        {"ticket_type_id": vip["id"], "quantity": 2},
        {"ticket_type_id": general["id"], "quantity": 1},
    ]), 201)
    assert held["status"] == "held" and held["quantity"] == 3
    assert (held["total_cents"], held["currency"]) == (10000, "EUR")
    assert (await api.get_event(event))["available_tickets"] == 7
    types = {t["name"]: t for t in await api.ticket_types(event)}
    assert types["VIP"]["available_tickets"] == 0

    booking = await expect(await api.confirm(customer, held, payment_reference="pay_123"), 201)
    assert booking["hold_id"] == held["id"]
    assert booking["payment_reference"] == "pay_123"
    assert booking["total_cents"] == 10000
    assert sorted((i["name"], i["quantity"], i["price_cents"]) for i in booking["items"]) == [
        ("General admission", 1, 0), ("VIP", 2, 5000)
    ]
    assert (await api.get_event(event))["available_tickets"] == 7
    again = await expect(await api.confirm(customer, held), 200)
    assert again["id"] == booking["id"]
    shown = await expect(await api.get(f"/api/v1/holds/{held['id']}", customer), 200)
    assert (shown["status"], shown["booking_id"]) == ("confirmed", booking["id"])


async def test_a_released_hold_gives_its_tickets_back_at_once(
    api: Api, organizer, customer
) -> None:
    event = await api.create_event(organizer, capacity=5)
    held = await expect(await api.hold(customer, event, quantity=5), 201)
    await expect(await api.book(customer, event, quantity=1), 409)
    answer = await api.delete(f"/api/v1/holds/{held['id']}", customer)
    assert answer.status == 204
    assert (await api.get_event(event))["available_tickets"] == 5
    await expect(await api.confirm(customer, held), 409)


async def test_an_expired_hold_cannot_be_confirmed_and_its_tickets_come_back(
    api: Api, organizer, customer, pool: asyncpg.Pool
) -> None:
    event = await api.create_event(organizer, capacity=5)
    held = await expect(await api.hold(customer, event, quantity=2), 201)
    await pool.execute(
        "UPDATE holds SET expires_at = now() - interval '1 second' WHERE id = $1", held["id"]
    )
    problem = await expect(await api.confirm(customer, held), 409)
    assert problem["code"] == "hold_expired"
    row = await pool.fetchrow("SELECT * FROM expire_holds(100)")
    assert row["expired"] == 1
    assert (await api.get_event(event))["available_tickets"] == 5
    assert (await pool.fetchrow("SELECT * FROM expire_holds(100)"))["expired"] == 0
