"""The waiting list through the API: joining a sold-out type, offers of the tickets that
come back, in order, and what each customer and organizer sees."""

from __future__ import annotations

from typing import Any

import asyncpg

from eventbook.check import consistency_report
from tests.assertions import assert_problem
from tests.client import Api, User, eventually, expect, future, item


async def counts_agree(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        report = await consistency_report(conn, 3600, 3600)
    assert {kind: rows for kind, rows in report.items() if rows} == {}


async def sold_out_event(api: Api, organizer: User, buyer: User, capacity: int = 2) -> Any:
    event = await api.create_event(organizer, capacity=capacity)
    booking = await expect(await api.book(buyer, event, quantity=capacity), 201)
    return event, booking


async def test_cancelled_tickets_are_offered_to_the_first_in_line_not_sold_again(
    api: Api, organizer, customer, pool: asyncpg.Pool
) -> None:
    event, booking = await sold_out_event(api, organizer, customer)
    first, second, public = [await api.register() for _ in range(3)]
    one = await expect(await api.join_waitlist(first, event, quantity=2), 201)
    two = await expect(await api.join_waitlist(second, event, quantity=1), 201)
    assert (one["status"], one["position"], two["position"]) == ("waiting", 1, 2)

    await expect(await api.post(f"/api/v1/bookings/{booking['id']}/cancel", customer), 200)
    await expect(await api.book(public, event, quantity=1), 409)
    offered = await api.waitlist_entry(first, one)
    assert offered["status"] == "offered" and offered["hold_id"] is not None
    assert (await api.waitlist_entry(second, two))["position"] == 1
    booked = await expect(await api.confirm(first, {"id": offered["hold_id"]}), 201)
    assert booked["quantity"] == 2
    assert (await api.waitlist_entry(first, one))["status"] == "accepted"
    await counts_agree(pool)


async def test_a_customer_at_the_cap_when_their_turn_comes_lapses_and_the_next_is_offered(
    api: Api, organizer, customer, pool: asyncpg.Pool
) -> None:
    event = await api.create_event(organizer, capacity=3, max_tickets_per_customer=2)
    vip = await api.add_ticket_type(organizer, event, name="VIP", quota=1)
    [general, _] = await api.ticket_types(event)
    sold = await expect(await api.book(customer, event, items=[item(vip, 1)]), 201)
    first, second = await api.register(), await api.register()
    one = await expect(await api.join_waitlist(first, event, vip), 201)
    two = await expect(await api.join_waitlist(second, event, vip), 201)
    # Meanwhile the first in line books two General admission tickets: the cap.
    await expect(await api.book(first, event, items=[item(general, 2)]), 201)

    await expect(await api.post(f"/api/v1/bookings/{sold['id']}/cancel", customer), 200)
    assert (await api.waitlist_entry(first, one))["status"] == "lapsed"
    assert (await api.waitlist_entry(second, two))["status"] == "offered"
    await counts_agree(pool)


async def test_a_type_with_a_waiting_list_is_closed_rather_than_deleted(
    api: Api, organizer, customer
) -> None:
    event = await api.create_event(organizer, capacity=1)
    extra = await api.add_ticket_type(organizer, event, name="Extra")
    [general, _] = await api.ticket_types(event)
    await expect(await api.book(customer, event, items=[item(general, 1)]), 201)
    await expect(await api.join_waitlist(await api.register(), event, extra), 201)
    answer = await api.delete(f"/api/v1/events/{event['id']}/ticket-types/{extra['id']}",
                              organizer)
    await assert_problem(answer, 409, "ticket_type_has_waitlist")


async def test_tickets_left_after_everyone_waiting_got_an_offer_go_back_on_sale(
    api: Api, organizer, customer, pool: asyncpg.Pool
) -> None:
    event, booking = await sold_out_event(api, organizer, customer, capacity=3)
    waiter, public = await api.register(), await api.register()
    entry = await expect(await api.join_waitlist(waiter, event, quantity=2), 201)

    await expect(await api.post(f"/api/v1/bookings/{booking['id']}/cancel", customer), 200)
    assert (await api.waitlist_entry(waiter, entry))["status"] == "offered"
    assert (await api.get_event(event))["available_tickets"] == 1
    await expect(await api.book(public, event, quantity=1), 201)
    await counts_agree(pool)


async def test_what_comes_back_before_a_types_sales_window_opens_is_offered_when_it_does(
    holds_api: Api, pool: asyncpg.Pool
) -> None:
    """The organizer moves the sales window ahead while customers wait: a cancellation
    meanwhile is kept for them, off sale, and the holds actor offers it as the window
    opens, before the public can book it."""
    api = holds_api
    organizer, customer = await api.register(role="organizer"), await api.register()
    event, booking = await sold_out_event(api, organizer, customer)
    [general] = await api.ticket_types(event)
    waiter, public = await api.register(), await api.register()
    entry = await expect(await api.join_waitlist(waiter, event, quantity=2), 201)
    type_path = f"/api/v1/events/{event['id']}/ticket-types/{general['id']}"
    await expect(await api.patch(type_path, organizer, json={"sales_start": future(1)}), 200)

    await expect(await api.post(f"/api/v1/bookings/{booking['id']}/cancel", customer), 200)
    assert (await api.waitlist_entry(waiter, entry))["status"] == "waiting"
    assert (await api.get_event(event))["available_tickets"] == 0
    # The window opens: as if by time.
    await pool.execute(
        "UPDATE ticket_types SET sales_start = now() - interval '1 second' WHERE id = $1",
        general["id"],
    )

    async def offered() -> bool:
        return (await api.waitlist_entry(waiter, entry))["status"] == "offered"

    await eventually(offered)
    answer = await api.book(public, event, quantity=1)
    await assert_problem(answer, 409, "sold_out")
    await counts_agree(pool)
