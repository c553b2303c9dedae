"""The waiting list through the API: joining a sold-out type, offers of the tickets that
come back, in order, and what each customer and organizer sees."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from eventbook.actors.confirmations import Confirmations
from eventbook.actors.mailer import SimulatedMailer
from eventbook.actors.stream import Message
from eventbook.app import create_app
from eventbook.check import consistency_report
from eventbook.config import Config
from eventbook.keys import REDIS
from tests.assertions import assert_problem
from tests.client import Api, User, eventually, expect, future, item
from tests.conftest import Inbox
from tests.seed import move_event


async def counts_agree(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        report = await consistency_report(conn, 3600, 3600)
    assert {kind: rows for kind, rows in report.items() if rows} == {}


async def sold_out_event(api: Api, organizer: User, buyer: User, capacity: int = 2) -> Any:
    event = await api.create_event(organizer, capacity=capacity)
    booking = await expect(await api.book(buyer, event, quantity=capacity), 201)
    return event, booking


async def two_in_line_one_offered(api: Api, organizer: User, customer: User) -> Any:
    """A one-ticket event `customer` sold out, two customers waiting for it in turn, and
    the booking cancelled: the first in line holds the offer. Returns the event, and
    the first and the second in line with their entries."""
    event, booking = await sold_out_event(api, organizer, customer, capacity=1)
    first, second = await api.register(), await api.register()
    one, two = await join(api, first, event), await join(api, second, event)
    await cancel(api, customer, booking)
    return event, (first, one), (second, two)


async def bookings_of_one(api: Api, event: dict[str, Any], count: int) -> list[tuple[User, Any]]:
    """`count` customers who book one ticket each of the event's only type."""
    made = []
    for _ in range(count):
        buyer = await api.register()
        made.append((buyer, await expect(await api.book(buyer, event, quantity=1), 201)))
    return made


async def vip_sold_out(api: Api, organizer: User, customer: User, quota: int) -> Any:
    """An event of 10 tickets whose type VIP (`quota` tickets) `customer` sold out, one
    booking a ticket: the event, the type and the bookings."""
    event = await api.create_event(organizer, capacity=10)
    vip = await api.add_ticket_type(organizer, event, name="VIP", quota=quota)
    bought = [await expect(await api.book(customer, event, items=[item(vip, 1)]), 201)
              for _ in range(quota)]
    return event, vip, bought


async def cancel(api: Api, customer: User, booking: dict[str, Any]) -> None:
    await expect(await api.post(f"/api/v1/bookings/{booking['id']}/cancel", customer), 200)


async def join(api: Api, customer: User, event: dict[str, Any], quantity: int = 1,
               ticket_type: dict[str, Any] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = await expect(
        await api.join_waitlist(customer, event, ticket_type, quantity=quantity), 201
    )
    return entry


async def status_of(api: Api, customer: User, entry: dict[str, Any]) -> str:
    status: str = (await api.waitlist_entry(customer, entry))["status"]
    return status


async def is_offered(api: Api, customer: User, entry: dict[str, Any]) -> bool:
    return await status_of(api, customer, entry) == "offered"


async def only_type(api: Api, event: dict[str, Any]) -> dict[str, Any]:
    [ticket_type] = await api.ticket_types(event)
    return ticket_type


async def type_shown(api: Api, event: dict[str, Any], ticket_type: dict[str, Any]) -> Any:
    return await expect(
        await api.get(f"/api/v1/events/{event['id']}/ticket-types/{ticket_type['id']}"), 200
    )


async def change_type(api: Api, organizer: User, event: dict[str, Any],
                      ticket_type: dict[str, Any], **changes: Any) -> Any:
    return await api.patch(
        f"/api/v1/events/{event['id']}/ticket-types/{ticket_type['id']}", organizer,
        json=changes,
    )


async def change_event(api: Api, organizer: User, event: dict[str, Any], **changes: Any) -> Any:
    return await api.patch(f"/api/v1/events/{event['id']}", organizer, json=changes)


async def hold_status(api: Api, customer: User, hold_id: str) -> str:
    status: str = (await expect(await api.get(f"/api/v1/holds/{hold_id}", customer), 200))[
        "status"
    ]
    return status


@pytest.fixture
async def short_offers_api(config: Config, aiohttp_client: Any) -> Api:
    """The app with the holds actor running (and no other), offers lasting one second."""
    app_config = config.replace(actors=("holds",), waitlist_offer_seconds=1)
    client: TestClient[Any, Any] = await aiohttp_client(create_app(app_config, actors=True))
    return Api(client)


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


# -- joining --------------------------------------------------------------------------


async def test_customers_join_a_sold_out_type_in_order_with_their_positions(
    api: Api, organizer, customer
) -> None:
    event, _ = await sold_out_event(api, organizer, customer)
    general = await only_type(api, event)
    waiting = [await api.register() for _ in range(3)]
    entries = [await join(api, who, event, quantity=n + 1) for n, who in enumerate(waiting)]
    assert [e["position"] for e in entries] == [1, 2, 3]
    assert [e["quantity"] for e in entries] == [1, 2, 3]
    for entry in entries:
        assert (entry["status"], entry["hold_id"], entry["offer_expires_at"]) == (
            "waiting", None, None
        )
        assert (entry["event_id"], entry["ticket_type_id"]) == (event["id"], general["id"])
        assert entry["offered_at"] is None and entry["ended_at"] is None


async def test_a_type_with_tickets_on_sale_is_booked_not_waited_for(
    api: Api, organizer, customer
) -> None:
    event = await api.create_event(organizer, capacity=5)
    await expect(await api.book(customer, event, quantity=3), 201)
    answer = await api.join_waitlist(await api.register(), event, quantity=1)
    body = await assert_problem(answer, 409, "tickets_available")
    assert body["available_tickets"] == 2


async def test_a_type_sold_out_under_its_quota_takes_entries_while_the_rest_sells(
    api: Api, organizer, customer
) -> None:
    event = await api.create_event(organizer, capacity=10)
    general = await only_type(api, event)
    vip = await api.add_ticket_type(organizer, event, name="VIP", quota=2)
    await expect(await api.book(customer, event, items=[
        {"ticket_type_id": vip["id"], "quantity": 2}
    ]), 201)
    waiting = await api.register()

    assert (await join(api, waiting, event, ticket_type=vip))["position"] == 1
    answer = await api.join_waitlist(waiting, event, general, quantity=1)
    assert (await assert_problem(answer, 409, "tickets_available"))["available_tickets"] == 8


async def test_a_type_with_quota_left_takes_entries_once_the_event_is_sold_out(
    api: Api, organizer, customer
) -> None:
    event = await api.create_event(organizer, capacity=3)
    general = await only_type(api, event)
    vip = await api.add_ticket_type(organizer, event, name="VIP", quota=2)
    waiting = await api.register()
    answer = await api.join_waitlist(waiting, event, vip, quantity=1)
    assert (await assert_problem(answer, 409, "tickets_available"))["available_tickets"] == 2

    await expect(await api.book(customer, event, items=[
        {"ticket_type_id": general["id"], "quantity": 3}
    ]), 201)
    assert (await type_shown(api, event, vip))["available_tickets"] == 0
    assert (await join(api, waiting, event, ticket_type=vip))["status"] == "waiting"


async def test_a_customer_waits_once_per_type_while_the_entry_is_live(
    api: Api, organizer, customer
) -> None:
    event, booking = await sold_out_event(api, organizer, customer, capacity=1)
    first, second = await api.register(), await api.register()
    entry = await join(api, first, event)
    await join(api, second, event)
    again = await api.join_waitlist(first, event, quantity=2)
    assert (await assert_problem(again, 409, "already_on_waitlist"))["entry_id"] == entry["id"]

    await cancel(api, customer, booking)
    assert await status_of(api, first, entry) == "offered"
    again = await api.join_waitlist(first, event, quantity=1)
    assert (await assert_problem(again, 409, "already_on_waitlist"))["entry_id"] == entry["id"]


async def test_a_customer_may_wait_again_after_declining_or_leaving(
    api: Api, organizer, customer, pool: asyncpg.Pool
) -> None:
    event, (first, entry), (second, behind) = await two_in_line_one_offered(
        api, organizer, customer
    )
    assert (await api.delete(f"/api/v1/waitlist/{entry['id']}", first)).status == 204
    assert await status_of(api, first, entry) == "declined"
    assert await status_of(api, second, behind) == "offered"

    rejoined = await join(api, first, event)
    assert rejoined["id"] != entry["id"] and rejoined["position"] == 1
    assert (await api.delete(f"/api/v1/waitlist/{rejoined['id']}", first)).status == 204
    assert await status_of(api, first, rejoined) == "left"
    assert (await join(api, first, event))["position"] == 1
    await counts_agree(pool)


async def test_a_customer_may_wait_again_after_an_offer_ran_out(
    short_offers_api: Api, pool: asyncpg.Pool
) -> None:
    api = short_offers_api
    organizer, customer = await api.register(role="organizer"), await api.register()
    event, (first, entry), (second, behind) = await two_in_line_one_offered(
        api, organizer, customer
    )

    await eventually(lambda: is_offered(api, second, behind))
    assert await status_of(api, first, entry) == "expired"
    assert (await join(api, first, event))["position"] == 1
    await counts_agree(pool)


async def test_an_unknown_or_malformed_event_has_no_waiting_list(api: Api, customer) -> None:
    for event_id in (str(uuid.uuid4()), "not-a-uuid"):
        answer = await api.join_waitlist(customer, {"id": event_id}, quantity=1)
        await assert_problem(answer, 404, "event_not_found")


async def test_a_cancelled_or_started_event_takes_no_entries(
    api: Api, organizer, customer, pool: asyncpg.Pool
) -> None:
    cancelled, _ = await sold_out_event(api, organizer, customer, capacity=1)
    await expect(await api.post(f"/api/v1/events/{cancelled['id']}/cancel", organizer), 200)
    started, _ = await sold_out_event(api, organizer, customer, capacity=1)
    await move_event(pool, started, "-1 hour")
    waiting = await api.register()
    for event in (cancelled, started):
        answer = await api.join_waitlist(waiting, event, quantity=1)
        await assert_problem(answer, 409, "event_not_bookable")


async def test_an_event_with_several_types_needs_one_named(
    api: Api, organizer, customer
) -> None:
    event, _ = await sold_out_event(api, organizer, customer, capacity=2)
    await api.add_ticket_type(organizer, event, name="VIP", quota=1)
    answer = await api.join_waitlist(await api.register(), event, quantity=1)
    await assert_problem(answer, 422, "ticket_type_required")


async def test_another_events_ticket_type_is_unknown(api: Api, organizer, customer) -> None:
    event, _ = await sold_out_event(api, organizer, customer, capacity=1)
    other, _ = await sold_out_event(api, organizer, customer, capacity=1)
    answer = await api.join_waitlist(
        await api.register(), event, await only_type(api, other), quantity=1
    )
    body = await assert_problem(answer, 422, "unknown_ticket_type")
    assert body["ticket_type_id"] == (await only_type(api, other))["id"]


async def test_a_closed_type_takes_no_entries(api: Api, organizer, customer) -> None:
    event, _ = await sold_out_event(api, organizer, customer, capacity=1)
    general = await only_type(api, event)
    await expect(await change_type(api, organizer, event, general, status="closed"), 200)
    answer = await api.join_waitlist(await api.register(), event, general, quantity=1)
    await assert_problem(answer, 409, "ticket_type_not_on_sale")


async def test_an_entry_wants_no_more_than_one_booking_may_take(
    api: Api, organizer, customer
) -> None:
    event = await api.create_event(organizer, capacity=4, max_tickets_per_booking=4)
    general = await only_type(api, event)
    vip = await api.add_ticket_type(organizer, event, name="VIP", quota=2, max_per_booking=2)
    await expect(await api.book(customer, event, items=[
        {"ticket_type_id": general["id"], "quantity": 4}
    ]), 201)
    waiting = await api.register()
    for ticket_type, quantity in ((vip, 3), (general, 5)):
        answer = await api.join_waitlist(waiting, event, ticket_type, quantity=quantity)
        body = await assert_problem(answer, 422, "validation_failed")
        assert list(body["errors"]) == ["quantity"]
    assert (await join(api, waiting, event, 2, vip))["quantity"] == 2
    assert (await join(api, waiting, event, 4, general))["quantity"] == 4


async def test_an_entry_counts_against_the_events_cap_per_customer(
    api: Api, organizer, customer
) -> None:
    event = await api.create_event(organizer, capacity=3, max_tickets_per_customer=2)
    waiting = await api.register()
    await expect(await api.book(waiting, event, quantity=1), 201)
    await expect(await api.book(customer, event, quantity=2), 201)
    answer = await api.join_waitlist(waiting, event, quantity=2)
    body = await assert_problem(answer, 409, "customer_limit_reached")
    assert body["customer_tickets_left"] == 1
    assert (await join(api, waiting, event, 1))["quantity"] == 1


@pytest.mark.parametrize("quantity", [0, 101, "2", None])
async def test_an_entry_wants_a_whole_number_of_tickets_from_1_to_100(
    api: Api, organizer, customer, quantity: Any
) -> None:
    event, _ = await sold_out_event(api, organizer, customer, capacity=1)
    answer = await api.join_waitlist(await api.register(), event, quantity=quantity)
    body = await assert_problem(answer, 422, "validation_failed")
    assert list(body["errors"]) == ["quantity"]


async def test_only_a_signed_in_customer_joins_a_waiting_list(
    api: Api, organizer, customer
) -> None:
    event, _ = await sold_out_event(api, organizer, customer, capacity=1)
    await assert_problem(await api.join_waitlist(organizer, event, quantity=1), 403,
                         "forbidden_role")
    anonymous = await api.post(f"/api/v1/events/{event['id']}/waitlist", json={"quantity": 1})
    await assert_problem(anonymous, 401, "unauthorized")
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")


# -- offers ---------------------------------------------------------------------------


async def test_an_entry_wanting_more_than_came_back_waits_and_keeps_those_behind_waiting(
    api: Api, organizer, pool: asyncpg.Pool
) -> None:
    event = await api.create_event(organizer, capacity=3)
    general = await only_type(api, event)
    sold = await bookings_of_one(api, event, 3)
    first, second, public = [await api.register() for _ in range(3)]
    wants_two = await join(api, first, event, 2)
    wants_one = await join(api, second, event, 1)

    await cancel(api, *sold[0])
    assert await status_of(api, first, wants_two) == "waiting"
    assert (await api.waitlist_entry(second, wants_one))["position"] == 2
    assert (await type_shown(api, event, general))["available_tickets"] == 0
    assert (await api.get_event(event))["available_tickets"] == 0
    answer = await api.book(public, event, quantity=1)
    assert (await assert_problem(answer, 409, "sold_out"))["available_tickets"] == 0
    await counts_agree(pool)

    await cancel(api, *sold[1])
    offered = await api.waitlist_entry(first, wants_two)
    assert offered["status"] == "offered"
    assert (await expect(await api.get(f"/api/v1/holds/{offered['hold_id']}", first), 200))[
        "quantity"] == 2
    assert (await api.waitlist_entry(second, wants_one))["position"] == 1
    await counts_agree(pool)

    await cancel(api, *sold[2])
    assert await status_of(api, second, wants_one) == "offered"
    await assert_problem(await api.book(public, event, quantity=1), 409, "sold_out")
    await counts_agree(pool)


async def test_a_type_that_lets_entries_skip_offers_what_came_back_to_one_it_fits(
    api: Api, organizer, pool: asyncpg.Pool
) -> None:
    event = await api.create_event(organizer, capacity=2)
    general = await only_type(api, event)
    sold = await bookings_of_one(api, event, 2)
    first, second = await api.register(), await api.register()
    wants_two = await join(api, first, event, 2)
    wants_one = await join(api, second, event, 1)
    await cancel(api, *sold[0])
    assert await status_of(api, second, wants_one) == "waiting"

    changed = await expect(
        await change_type(api, organizer, event, general, waitlist_allow_skip=True), 200
    )
    assert changed["waitlist_allow_skip"] is True
    assert await status_of(api, second, wants_one) == "offered"
    assert (await api.waitlist_entry(first, wants_two))["position"] == 1
    await counts_agree(pool)

    await cancel(api, *sold[1])
    assert await status_of(api, first, wants_two) == "waiting"
    assert (await type_shown(api, event, general))["available_tickets"] == 0
    await counts_agree(pool)


async def test_a_raised_quota_is_offered_to_the_waiting_first(
    api: Api, organizer, customer, pool: asyncpg.Pool
) -> None:
    event = await api.create_event(organizer, capacity=10)
    vip = await api.add_ticket_type(organizer, event, name="VIP", quota=1)
    await expect(await api.book(customer, event, items=[
        {"ticket_type_id": vip["id"], "quantity": 1}
    ]), 201)
    waiting, public = await api.register(), await api.register()
    entry = await join(api, waiting, event, 1, vip)

    raised = await expect(await change_type(api, organizer, event, vip, quota=2), 200)
    assert raised["available_tickets"] == 0
    assert await status_of(api, waiting, entry) == "offered"
    answer = await api.book(public, event, items=[{"ticket_type_id": vip["id"], "quantity": 1}])
    await assert_problem(answer, 409, "sold_out")
    await counts_agree(pool)


async def test_a_raised_capacity_is_offered_to_the_waiting_first(
    api: Api, organizer, customer, pool: asyncpg.Pool
) -> None:
    event, _ = await sold_out_event(api, organizer, customer, capacity=1)
    waiting, public = await api.register(), await api.register()
    entry = await join(api, waiting, event, 2)

    raised = await expect(await change_event(api, organizer, event, capacity=3), 200)
    assert raised["available_tickets"] == 0
    assert await status_of(api, waiting, entry) == "offered"
    await assert_problem(await api.book(public, event, quantity=1), 409, "sold_out")
    await counts_agree(pool)


async def test_a_released_offer_goes_to_the_next_in_line(
    api: Api, organizer, customer, pool: asyncpg.Pool
) -> None:
    _, (first, one), (second, two) = await two_in_line_one_offered(api, organizer, customer)
    offer = (await api.waitlist_entry(first, one))["hold_id"]

    assert (await api.delete(f"/api/v1/holds/{offer}", first)).status == 204
    assert await status_of(api, first, one) == "declined"
    assert await status_of(api, second, two) == "offered"
    await counts_agree(pool)


async def test_leaving_with_an_offer_declines_it_and_it_goes_to_the_next_in_line(
    api: Api, organizer, customer, pool: asyncpg.Pool
) -> None:
    _, (first, one), (second, two) = await two_in_line_one_offered(api, organizer, customer)
    offer = (await api.waitlist_entry(first, one))["hold_id"]

    assert (await api.delete(f"/api/v1/waitlist/{one['id']}", first)).status == 204
    declined = await api.waitlist_entry(first, one)
    assert (declined["status"], declined["hold_id"]) == ("declined", offer)
    assert declined["ended_at"] is not None
    assert await hold_status(api, first, offer) == "released"
    assert await status_of(api, second, two) == "offered"
    assert (await api.delete(f"/api/v1/waitlist/{one['id']}", first)).status == 204
    assert await status_of(api, first, one) == "declined"
    await counts_agree(pool)


async def test_an_offer_that_runs_out_goes_to_the_next_in_line(
    short_offers_api: Api, pool: asyncpg.Pool
) -> None:
    api = short_offers_api
    organizer, customer = await api.register(role="organizer"), await api.register()
    event, booking = await sold_out_event(api, organizer, customer, capacity=2)
    first, second, public = [await api.register() for _ in range(3)]
    one, two = await join(api, first, event, 2), await join(api, second, event, 2)
    await cancel(api, customer, booking)
    offered = await api.waitlist_entry(first, one)
    assert offered["status"] == "offered"

    await eventually(lambda: is_offered(api, second, two))
    assert await status_of(api, first, one) == "expired"
    assert await hold_status(api, first, offered["hold_id"]) == "expired"
    await assert_problem(await api.confirm(first, {"id": offered["hold_id"]}), 409,
                         "hold_expired")
    await assert_problem(await api.book(public, event, quantity=1), 409, "sold_out")
    await counts_agree(pool)


async def test_when_nobody_waits_any_more_the_reserve_goes_back_on_sale(
    api: Api, organizer, pool: asyncpg.Pool
) -> None:
    event = await api.create_event(organizer, capacity=2)
    general = await only_type(api, event)
    sold = await bookings_of_one(api, event, 2)
    waiting, public = await api.register(), await api.register()
    entry = await join(api, waiting, event, 2)
    await cancel(api, *sold[0])
    assert (await type_shown(api, event, general))["available_tickets"] == 0

    assert (await api.delete(f"/api/v1/waitlist/{entry['id']}", waiting)).status == 204
    assert await status_of(api, waiting, entry) == "left"
    assert (await type_shown(api, event, general))["available_tickets"] == 1
    assert (await api.get_event(event))["available_tickets"] == 1
    await counts_agree(pool)
    await expect(await api.book(public, event, quantity=1), 201)
    await counts_agree(pool)


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


async def test_a_closed_type_makes_no_offers_and_keeps_nothing_reserved(
    api: Api, organizer, customer, pool: asyncpg.Pool
) -> None:
    event, vip, bought = await vip_sold_out(api, organizer, customer, quota=2)
    waiting = await api.register()
    entry = await join(api, waiting, event, 2, vip)
    await cancel(api, customer, bought[0])
    assert (await api.get_event(event))["available_tickets"] == 8

    await expect(await change_type(api, organizer, event, vip, status="closed"), 200)
    assert (await api.get_event(event))["available_tickets"] == 9
    await counts_agree(pool)
    await cancel(api, customer, bought[1])
    assert await status_of(api, waiting, entry) == "waiting"
    assert (await api.get_event(event))["available_tickets"] == 10
    await counts_agree(pool)

    await expect(await change_type(api, organizer, event, vip, status="on_sale"), 200)
    assert await status_of(api, waiting, entry) == "offered"
    assert (await api.get_event(event))["available_tickets"] == 8
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


async def test_cancelling_the_event_cancels_its_waiting_list(
    api: Api, organizer, customer, pool: asyncpg.Pool
) -> None:
    event, (first, one), (second, two) = await two_in_line_one_offered(api, organizer, customer)
    offer = (await api.waitlist_entry(first, one))["hold_id"]

    await expect(await api.post(f"/api/v1/events/{event['id']}/cancel", organizer), 200)
    assert await status_of(api, first, one) == "cancelled"
    assert await status_of(api, second, two) == "cancelled"
    assert await hold_status(api, first, offer) == "released"
    assert (await only_type(api, event))["waitlist_length"] == 0
    await counts_agree(pool)


async def test_a_confirmed_offer_is_a_booking_at_the_types_price(
    api: Api, organizer, customer, pool: asyncpg.Pool
) -> None:
    event = await api.create_event(organizer, capacity=10)
    vip = await api.add_ticket_type(organizer, event, name="VIP", quota=2, price_cents=2500)
    bought = await expect(await api.book(customer, event, items=[
        {"ticket_type_id": vip["id"], "quantity": 2}
    ]), 201)
    waiting = await api.register()
    entry = await join(api, waiting, event, 2, vip)
    await cancel(api, customer, bought)
    offered = await api.waitlist_entry(waiting, entry)
    hold = await expect(await api.get(f"/api/v1/holds/{offered['hold_id']}", waiting), 200)
    assert (hold["total_cents"], hold["currency"]) == (5000, "EUR")

    booking = await expect(await api.confirm(waiting, {"id": offered["hold_id"]}), 201)
    assert booking["total_cents"] == 5000
    assert [(i["name"], i["quantity"], i["price_cents"]) for i in booking["items"]] == [
        ("VIP", 2, 2500)
    ]
    accepted = await api.waitlist_entry(waiting, entry)
    assert accepted["status"] == "accepted" and accepted["ended_at"] is not None
    await assert_problem(await api.delete(f"/api/v1/waitlist/{entry['id']}", waiting), 409,
                         "offer_accepted")
    await counts_agree(pool)


async def test_a_reserve_shrinks_with_the_capacity_down_to_what_is_sold_and_held(
    api: Api, organizer, pool: asyncpg.Pool
) -> None:
    event = await api.create_event(organizer, capacity=3)
    sold = await bookings_of_one(api, event, 3)
    waiting = await api.register()
    entry = await join(api, waiting, event, 2)
    await cancel(api, *sold[0])

    lowered = await expect(await change_event(api, organizer, event, capacity=2), 200)
    assert lowered["available_tickets"] == 0
    await counts_agree(pool)
    answer = await change_event(api, organizer, event, capacity=1)
    assert (await assert_problem(answer, 409, "capacity_below_sold"))["sold"] == 2
    assert await status_of(api, waiting, entry) == "waiting"
    await counts_agree(pool)


async def test_a_reserve_shrinks_with_the_quota_down_to_what_is_sold_and_held(
    api: Api, organizer, customer, pool: asyncpg.Pool
) -> None:
    event, vip, bought = await vip_sold_out(api, organizer, customer, quota=3)
    waiting = await api.register()
    entry = await join(api, waiting, event, 2, vip)
    await cancel(api, customer, bought[0])
    assert (await api.get_event(event))["available_tickets"] == 7

    lowered = await expect(await change_type(api, organizer, event, vip, quota=2), 200)
    assert lowered["available_tickets"] == 0
    assert (await api.get_event(event))["available_tickets"] == 8
    await counts_agree(pool)
    answer = await change_type(api, organizer, event, vip, quota=1)
    await assert_problem(answer, 409, "quota_below_taken")
    assert await status_of(api, waiting, entry) == "waiting"
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


async def test_when_the_last_in_line_lapses_the_tickets_go_back_on_sale(
    api: Api, organizer, customer, pool: asyncpg.Pool
) -> None:
    event = await api.create_event(organizer, capacity=3, max_tickets_per_customer=2)
    vip = await api.add_ticket_type(organizer, event, name="VIP", quota=1)
    [general, _] = await api.ticket_types(event)
    sold = await expect(await api.book(customer, event, items=[item(vip, 1)]), 201)
    capped, public = await api.register(), await api.register()
    entry = await join(api, capped, event, 1, vip)
    await expect(await api.book(capped, event, items=[item(general, 2)]), 201)

    await cancel(api, customer, sold)
    assert await status_of(api, capped, entry) == "lapsed"
    shown = await type_shown(api, event, vip)
    assert (shown["available_tickets"], shown["waitlist_length"]) == (1, 0)
    await counts_agree(pool)
    await expect(await api.book(public, event, items=[item(vip, 1)]), 201)
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


# -- reading --------------------------------------------------------------------------


async def test_my_waiting_list_is_mine_newest_first_in_pages(
    api: Api, organizer, customer
) -> None:
    events = [(await sold_out_event(api, organizer, customer, capacity=1))[0] for _ in range(3)]
    waiting, other = await api.register(), await api.register()
    mine = [await join(api, waiting, event) for event in events]
    await join(api, other, events[0])
    assert (await api.delete(f"/api/v1/waitlist/{mine[0]['id']}", waiting)).status == 204

    first = await expect(await api.get("/api/v1/me/waitlist?limit=2", waiting), 200)
    rest = await expect(await api.get(
        f"/api/v1/me/waitlist?limit=2&cursor={first['next_cursor']}", waiting
    ), 200)
    assert rest["next_cursor"] is None
    shown = first["items"] + rest["items"]
    assert [e["id"] for e in shown] == [e["id"] for e in reversed(mine)]
    assert [(e["status"], e["position"]) for e in shown] == [
        ("waiting", 1), ("waiting", 1), ("left", None)
    ]
    theirs = await expect(await api.get("/api/v1/me/waitlist", other), 200)
    assert [e["position"] for e in theirs["items"]] == [1]


async def test_another_customers_entry_is_not_found(api: Api, organizer, customer) -> None:
    event, _ = await sold_out_event(api, organizer, customer, capacity=1)
    waiting, other = await api.register(), await api.register()
    entry = await join(api, waiting, event)
    for answer in (
        await api.get(f"/api/v1/waitlist/{entry['id']}", other),
        await api.delete(f"/api/v1/waitlist/{entry['id']}", other),
        await api.get("/api/v1/waitlist/not-a-uuid", waiting),
        await api.get(f"/api/v1/waitlist/{uuid.uuid4()}", waiting),
    ):
        await assert_problem(answer, 404, "waitlist_entry_not_found")
    assert await status_of(api, waiting, entry) == "waiting"


async def event_waitlist(api: Api, organizer: User, event: dict[str, Any], limit: int,
                         **filters: str) -> list[dict[str, Any]]:
    """Every entry of the organizer's list, read `limit` at a time."""
    query = "&".join(f"{name}={value}" for name, value in filters.items())
    shown: list[dict[str, Any]] = []
    cursor = None
    while True:
        path = f"/api/v1/events/{event['id']}/waitlist?limit={limit}&{query}"
        page = await expect(await api.get(path + (f"&cursor={cursor}" if cursor else ""),
                                          organizer), 200)
        assert len(page["items"]) <= limit
        shown.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return shown


async def test_the_organizer_reads_the_list_in_order_of_joining_with_each_place_in_line(
    api: Api, organizer, customer
) -> None:
    event = await api.create_event(organizer, capacity=2)
    general = await only_type(api, event)
    vip = await api.add_ticket_type(organizer, event, name="VIP", quota=1)
    await expect(await api.book(customer, event, items=[
        {"ticket_type_id": general["id"], "quantity": 1},
        {"ticket_type_id": vip["id"], "quantity": 1},
    ]), 201)
    people = [await api.register(name=f"Person {n}") for n in range(6)]
    kinds = [general, vip, general, vip, general, general]
    entries = [
        await join(api, who, event, 1, kind) for who, kind in zip(people, kinds, strict=True)
    ]
    assert (await api.delete(f"/api/v1/waitlist/{entries[0]['id']}", people[0])).status == 204

    expected = [None, 1, 1, 2, 2, 3]
    for limit in (1, 2, 100):
        shown = await event_waitlist(api, organizer, event, limit)
        assert [e["id"] for e in shown] == [e["id"] for e in entries]
        assert [e["position"] for e in shown] == expected
    assert [(e["user_id"], e["email"], e["name"]) for e in shown] == [
        (who.id, who.email, f"Person {n}") for n, who in enumerate(people)
    ]
    for limit in (1, 2):
        of_general = await event_waitlist(api, organizer, event, limit,
                                          ticket_type_id=general["id"])
        assert [e["position"] for e in of_general] == [None, 1, 2, 3]
        still_waiting = await event_waitlist(api, organizer, event, limit, status="waiting")
        assert [e["id"] for e in still_waiting] == [e["id"] for e in entries[1:]]
        assert [e["position"] for e in still_waiting] == [1, 1, 2, 2, 3]
        waiting_general = await event_waitlist(api, organizer, event, limit,
                                               ticket_type_id=general["id"], status="waiting")
        assert [e["position"] for e in waiting_general] == [1, 2, 3]
    gone = await event_waitlist(api, organizer, event, 2, status="left")
    assert [(e["id"], e["position"]) for e in gone] == [(entries[0]["id"], None)]


async def test_only_the_events_organizer_reads_its_waiting_list(
    api: Api, organizer, customer
) -> None:
    event, _ = await sold_out_event(api, organizer, customer, capacity=1)
    path = f"/api/v1/events/{event['id']}/waitlist"
    await assert_problem(await api.get(path, await api.register(role="organizer")), 403,
                         "not_event_owner")
    await assert_problem(await api.get(path, customer), 403, "forbidden_role")
    await assert_problem(await api.get(f"/api/v1/events/{uuid.uuid4()}/waitlist", organizer),
                         404, "event_not_found")


async def test_a_bad_cursor_of_the_organizers_list_is_refused(
    api: Api, organizer, customer
) -> None:
    event, _ = await sold_out_event(api, organizer, customer, capacity=1)
    await join(api, await api.register(), event)
    mine = await expect(await api.get("/api/v1/me/waitlist?limit=1", customer), 200)
    assert mine["next_cursor"] is None
    for cursor in ("garbage", "WyJhIl0", "WzEsMl0"):
        answer = await api.get(
            f"/api/v1/events/{event['id']}/waitlist?cursor={cursor}", organizer
        )
        body = await assert_problem(answer, 422, "validation_failed")
        assert list(body["errors"]) == ["cursor"]


async def test_ticket_types_show_how_many_wait_for_them(
    api: Api, organizer, customer
) -> None:
    event, booking = await sold_out_event(api, organizer, customer, capacity=1)
    general = await only_type(api, event)
    assert (general["waitlist_length"], general["waitlist_allow_skip"]) == (0, False)
    first, second, third = [await api.register() for _ in range(3)]
    entries = [await join(api, who, event) for who in (first, second, third)]
    assert (await only_type(api, event))["waitlist_length"] == 3
    assert (await api.delete(f"/api/v1/waitlist/{entries[2]['id']}", third)).status == 204
    assert (await only_type(api, event))["waitlist_length"] == 2
    await cancel(api, customer, booking)
    assert (await type_shown(api, event, general))["waitlist_length"] == 1


# -- the offer mail -------------------------------------------------------------------


async def test_an_offer_is_mailed_once_and_shown_among_the_customers_notifications(
    make_api: Any, config: Config, pool: asyncpg.Pool, smtp_server: tuple[str, Inbox]
) -> None:
    url, inbox = smtp_server
    api = await make_api(actors=True, smtp_url=url, mail_from="tickets@eventbook.test")
    organizer, customer = await api.register(role="organizer"), await api.register()
    event = await api.create_event(organizer, title="Sold Out Show", capacity=1)
    booking = await expect(await api.book(customer, event), 201)
    waiting = await api.register()
    entry = await join(api, waiting, event)
    await cancel(api, customer, booking)
    hold_id = (await api.waitlist_entry(waiting, entry))["hold_id"]

    async def offer_notes() -> list[dict[str, Any]]:
        page = await expect(await api.get("/api/v1/me/notifications", waiting), 200)
        return [n for n in page["items"]
                if n["kind"] == "waitlist_offer" and n["sent_at"] is not None]

    [note] = await eventually(offer_notes)
    assert (note["hold_id"], note["event_id"], note["booking_id"]) == (
        hold_id, event["id"], None
    )
    assert hold_id in note["body"]
    [mail] = [sent for to, sent in inbox.mails if to == [waiting.email]]
    assert mail["Subject"] == note["subject"] == "Tickets for you: Sold Out Show"
    assert hold_id in mail.get_payload()

    redelivered = Message("1-0", {"kind": "waitlist_offer", "payload": json.dumps(
        {"hold_id": hold_id, "entry_id": entry["id"]}
    )}, 2)
    mailer = SimulatedMailer()
    await Confirmations(config, pool, api.app[REDIS], mailer).handle(redelivered)
    assert mailer.sent == 0
    assert len(await offer_notes()) == 1
    assert len([to for to, _ in inbox.mails if to == [waiting.email]]) == 1

