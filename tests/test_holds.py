"""Checkout holds through the API: take, read, confirm, release, and expiry."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from tests.assertions import assert_problem
from tests.client import Api, User, eventually, expect, item, metric
from tests.seed import move_event
from tests.test_check import check


def hold_path(hold: dict[str, Any] | str) -> str:
    return f"/api/v1/holds/{hold['id'] if isinstance(hold, dict) else hold}"


async def hold_status(api: Api, customer: User, hold: dict[str, Any]) -> str:
    status: str = (await expect(await api.get(hold_path(hold), customer), 200))["status"]
    return status


async def run_out(pool: asyncpg.Pool, hold: dict[str, Any]) -> None:
    """Let the hold's time run out now (the holds actor has not seen it yet)."""
    await pool.execute(
        "UPDATE holds SET expires_at = now() - interval '1 second' WHERE id = $1", hold["id"]
    )


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
    # Shown as the confirmation found it, before the holds actor has been by.
    shown = await expect(await api.get(f"/api/v1/holds/{held['id']}", customer), 200)
    assert shown["status"] == "expired"
    row = await pool.fetchrow("SELECT * FROM expire_holds(100)")
    assert row["expired"] == 1
    assert (await api.get_event(event))["available_tickets"] == 5
    assert (await pool.fetchrow("SELECT * FROM expire_holds(100)"))["expired"] == 0


async def test_a_hold_shows_its_items_and_runs_out_after_the_hold_seconds(
    make_api: Callable[..., Awaitable[Api]],
) -> None:
    api = await make_api(hold_seconds=120)
    organizer, customer = await api.register(role="organizer"), await api.register()
    event = await api.create_event(organizer, currency="USD")
    vip = await api.add_ticket_type(organizer, event, name="VIP", price_cents=2500)
    before = dt.datetime.now(dt.UTC)
    held = await expect(await api.hold(customer, event, items=[item(vip, 2)]), 201)
    expires_at = dt.datetime.fromisoformat(held["expires_at"])
    assert before + dt.timedelta(seconds=119) < expires_at
    assert expires_at < dt.datetime.now(dt.UTC) + dt.timedelta(seconds=121)
    assert (held["total_cents"], held["currency"], held["booking_id"]) == (5000, "USD", None)
    [line] = held["items"]
    assert (line["ticket_type_id"], line["name"], line["quantity"], line["price_cents"]) == (
        vip["id"], "VIP", 2, 2500
    )
    assert await expect(await api.get(hold_path(held), customer), 200) == held


async def test_a_hold_follows_the_booking_rules(api: Api, organizer: User, customer: User) -> None:
    event = await api.create_event(organizer, capacity=10)
    vip = await api.add_ticket_type(organizer, event, name="VIP", quota=2)
    await assert_problem(await api.hold(customer, event, quantity=1), 422, "ticket_type_required")
    problem = await assert_problem(
        await api.hold(customer, event, items=[item(vip, 3)]), 409, "sold_out"
    )
    assert (problem["ticket_type_id"], problem["available_tickets"]) == (vip["id"], 2)
    await expect(await api.hold(customer, event, items=[item(vip, 2)]), 201)
    problem = await assert_problem(
        await api.book(customer, event, items=[item(vip, 1)]), 409, "sold_out"
    )
    assert problem["available_tickets"] == 0


async def test_organizers_cannot_hold_tickets(api: Api, organizer: User) -> None:
    event = await api.create_event(organizer)
    await assert_problem(await api.hold(organizer, event, quantity=1), 403, "forbidden_role")
    assert (await api.get_event(event))["available_tickets"] == event["capacity"]


async def test_a_hold_needs_a_token(api: Api, organizer: User) -> None:
    event = await api.create_event(organizer)
    answer = await api.post(f"/api/v1/events/{event['id']}/holds", json={"quantity": 1})
    await assert_problem(answer, 401, "unauthorized")


@pytest.mark.parametrize("which", ["another_customers", "unknown", "malformed"])
async def test_a_hold_that_is_not_mine_is_not_found(
    api: Api, organizer: User, customer: User, which: str
) -> None:
    event = await api.create_event(organizer, capacity=5)
    theirs = await expect(await api.hold(customer, event, quantity=2), 201)
    me = await api.register()
    path = hold_path({
        "another_customers": theirs["id"], "unknown": str(uuid.uuid4()), "malformed": "nope"
    }[which])
    await assert_problem(await api.get(path, me), 404, "hold_not_found")
    await assert_problem(await api.post(f"{path}/confirm", me, json={}), 404, "hold_not_found")
    await assert_problem(await api.delete(path, me), 404, "hold_not_found")
    assert await hold_status(api, customer, theirs) == "held"
    assert (await api.get_event(event))["available_tickets"] == 3


async def test_a_released_hold_cannot_be_confirmed_and_releasing_it_again_is_204(
    api: Api, organizer: User, customer: User
) -> None:
    event = await api.create_event(organizer, capacity=5)
    held = await expect(await api.hold(customer, event, quantity=2), 201)
    assert (await api.delete(hold_path(held), customer)).status == 204
    await assert_problem(await api.confirm(customer, held), 409, "hold_released")
    assert (await api.delete(hold_path(held), customer)).status == 204
    assert await hold_status(api, customer, held) == "released"
    assert (await api.get_event(event))["available_tickets"] == 5


async def test_releasing_a_hold_that_ran_out_is_204_before_and_after_it_expires(
    api: Api, organizer: User, customer: User, pool: asyncpg.Pool
) -> None:
    event = await api.create_event(organizer, capacity=5)
    held = await expect(await api.hold(customer, event, quantity=2), 201)
    await run_out(pool, held)
    assert (await api.delete(hold_path(held), customer)).status == 204
    assert (await pool.fetchrow("SELECT * FROM expire_holds(100)"))["expired"] == 1
    assert (await api.delete(hold_path(held), customer)).status == 204
    assert await hold_status(api, customer, held) == "expired"
    await assert_problem(await api.confirm(customer, held), 409, "hold_expired")
    assert (await api.get_event(event))["available_tickets"] == 5


async def test_confirming_again_with_another_payment_reference_is_refused(
    api: Api, organizer: User, customer: User
) -> None:
    event = await api.create_event(organizer)
    held = await expect(await api.hold(customer, event, quantity=1), 201)
    booking = await expect(await api.confirm(customer, held, payment_reference="pay_1"), 201)
    problem = await assert_problem(
        await api.confirm(customer, held, payment_reference="pay_2"), 409,
        "hold_already_confirmed",
    )
    assert "pay_1" not in problem["detail"]
    again = await expect(await api.confirm(customer, held, payment_reference="pay_1"), 200)
    assert (again["id"], again["payment_reference"]) == (booking["id"], "pay_1")


@pytest.mark.parametrize("reference", ["", "x" * 256, 42, "pay\x00", "pay\ud800"])
async def test_an_invalid_payment_reference_is_refused(
    api: Api, organizer: User, customer: User, reference: Any
) -> None:
    event = await api.create_event(organizer)
    held = await expect(await api.hold(customer, event, quantity=1), 201)
    problem = await assert_problem(
        await api.confirm(customer, held, payment_reference=reference), 422, "validation_failed"
    )
    assert set(problem["errors"]) == {"payment_reference"}
    assert await hold_status(api, customer, held) == "held"


async def test_a_confirmed_hold_cannot_be_released(
    api: Api, organizer: User, customer: User
) -> None:
    event = await api.create_event(organizer, capacity=5)
    held = await expect(await api.hold(customer, event, quantity=2), 201)
    await expect(await api.confirm(customer, held), 201)
    await assert_problem(await api.delete(hold_path(held), customer), 409, "hold_confirmed")
    assert await hold_status(api, customer, held) == "confirmed"
    assert (await api.get_event(event))["available_tickets"] == 3


async def test_a_hold_cannot_be_confirmed_once_the_event_has_started(
    api: Api, organizer: User, customer: User, pool: asyncpg.Pool
) -> None:
    event = await api.create_event(organizer)
    held = await expect(await api.hold(customer, event, quantity=1), 201)
    await move_event(pool, event, "-1 minute", "2 hours")
    await assert_problem(await api.confirm(customer, held), 409, "event_not_bookable")
    assert await hold_status(api, customer, held) == "held"
    mine = await expect(await api.get("/api/v1/bookings", customer), 200)
    assert mine["items"] == []


async def test_an_idempotency_key_takes_one_hold(
    api: Api, organizer: User, customer: User
) -> None:
    event = await api.create_event(organizer, capacity=10)
    first = await expect(await api.hold(customer, event, key="cart-1", quantity=3), 201)
    again = await expect(await api.hold(customer, event, key="cart-1", quantity=3), 200)
    assert again["id"] == first["id"] and again["expires_at"] == first["expires_at"]
    assert (await api.get_event(event))["available_tickets"] == 7
    other = await api.hold(customer, event, key="cart-1", quantity=2)
    await assert_problem(other, 422, "idempotency_key_reused")
    assert (await api.get_event(event))["available_tickets"] == 7


async def test_cancelling_the_event_releases_its_live_holds(
    api: Api, organizer: User, customer: User
) -> None:
    event = await api.create_event(organizer, capacity=10)
    vip = await api.add_ticket_type(organizer, event, name="VIP", quota=4)
    held = await expect(await api.hold(customer, event, items=[item(vip, 4)]), 201)
    await expect(await api.post(f"/api/v1/events/{event['id']}/cancel", organizer), 200)

    assert await hold_status(api, customer, held) == "released"
    cancelled = await api.get_event(event)
    assert (cancelled["status"], cancelled["available_tickets"]) == ("cancelled", 10)
    await assert_problem(await api.confirm(customer, held), 409, "hold_released")
    assert (await api.delete(hold_path(held), customer)).status == 204


async def test_a_confirmed_holds_booking_gets_its_confirmation_mail(
    make_api: Callable[..., Awaitable[Api]], pool: asyncpg.Pool
) -> None:
    api = await make_api(actors=True)
    organizer, customer = await api.register(role="organizer"), await api.register()
    event = await api.create_event(organizer, title="Hold Night")
    held = await expect(await api.hold(customer, event, quantity=2), 201)
    booking = await expect(await api.confirm(customer, held, payment_reference="pay_9"), 201)

    async def sent() -> dict[str, Any] | None:
        shown = await expect(await api.get(f"/api/v1/bookings/{booking['id']}", customer), 200)
        return shown if shown["confirmation_status"] == "sent" else None

    shown = await eventually(sent, timeout=20)
    assert shown["confirmed_at"] is not None
    mails = await expect(await api.get("/api/v1/me/notifications", customer), 200)
    [mail] = [m for m in mails["items"] if m["booking_id"] == booking["id"]]
    assert mail["kind"] == "booking_confirmed" and "Hold Night" in mail["subject"]


async def test_the_attendee_list_shows_each_attendees_ticket_types(
    api: Api, organizer: User, customer: User
) -> None:
    event = await api.create_event(organizer)
    vip = await api.add_ticket_type(organizer, event, name="VIP", price_cents=4000)
    [general, _] = await api.ticket_types(event)
    held = await expect(await api.hold(customer, event, items=[item(vip, 2)]), 201)
    await expect(await api.confirm(customer, held), 201)
    other = await api.register()
    await expect(await api.book(other, event, items=[item(general, 1), item(vip, 1)]), 201)
    still_held = await api.register()
    await expect(await api.hold(still_held, event, items=[item(general, 3)]), 201)

    page = await expect(await api.get(f"/api/v1/events/{event['id']}/attendees", organizer), 200)
    kinds = {
        attendee["user_id"]: sorted((i["name"], i["quantity"]) for i in attendee["items"])
        for attendee in page["items"]
    }
    assert kinds == {customer.id: [("VIP", 2)], other.id: [("General admission", 1), ("VIP", 1)]}


async def test_check_counts_a_live_hold_in_the_event_and_its_type(
    api: Api, organizer: User, customer: User, config: Any
) -> None:
    event = await api.create_event(organizer, capacity=10)
    vip = await api.add_ticket_type(organizer, event, name="VIP", quota=5)
    await expect(await api.hold(customer, event, items=[item(vip, 3)]), 201)
    await expect(await api.book(customer, event, items=[item(vip, 1)]), 201)
    code, report = check(config)
    assert (code, report["ticket_counts"], report["ticket_type_counts"]) == (0, [], [])


async def test_hold_metrics_count_created_confirmed_released_and_expired(
    make_api: Callable[..., Awaitable[Api]], pool: asyncpg.Pool
) -> None:
    api = await make_api(actors=True)
    organizer, customer = await api.register(role="organizer"), await api.register()
    event = await api.create_event(organizer, capacity=10)

    async def counts() -> dict[str, float | None]:
        return {kind: await metric(api, "eventbook_holds_total", event=kind)
                for kind in ("created", "confirmed", "released", "expired")}

    assert await counts() == {"created": 0, "confirmed": 0, "released": 0, "expired": 0}
    to_confirm = await expect(await api.hold(customer, event, quantity=1), 201)
    await expect(await api.confirm(customer, to_confirm), 201)
    to_release = await expect(await api.hold(customer, event, quantity=1), 201)
    assert (await api.delete(hold_path(to_release), customer)).status == 204
    to_expire = await expect(await api.hold(customer, event, quantity=2), 201)
    await run_out(pool, to_expire)

    async def expired() -> bool:
        return await metric(api, "eventbook_holds_total", event="expired") == 1

    await eventually(expired, timeout=10)
    assert await counts() == {"created": 3, "confirmed": 1, "released": 1, "expired": 1}
    assert await hold_status(api, customer, to_expire) == "expired"
    assert (await api.get_event(event))["available_tickets"] == 9


async def test_a_confirmed_hold_counts_once_against_the_per_customer_cap(
    api: Api, organizer: User, customer: User
) -> None:
    event = await api.create_event(organizer, capacity=10, max_tickets_per_customer=4)
    held = await expect(await api.hold(customer, event, quantity=2), 201)
    await expect(await api.confirm(customer, held), 201)
    await expect(await api.book(customer, event, quantity=2), 201)
    problem = await assert_problem(await api.hold(customer, event, quantity=1), 409,
                                   "customer_limit_reached")
    assert problem["customer_tickets_left"] == 0
    assert (await api.get_event(event))["available_tickets"] == 6


async def test_a_hold_of_an_event_that_started_or_was_cancelled_is_refused(
    api: Api, organizer: User, customer: User, pool: asyncpg.Pool
) -> None:
    started = await api.create_event(organizer)
    await move_event(pool, started, "-1 minute", "2 hours")
    await assert_problem(await api.hold(customer, started, quantity=1), 409, "event_not_bookable")
    cancelled = await api.create_event(organizer)
    await expect(await api.post(f"/api/v1/events/{cancelled['id']}/cancel", organizer), 200)
    await assert_problem(await api.hold(customer, cancelled, quantity=1), 409,
                         "event_not_bookable")
    unknown = {"id": str(uuid.uuid4())}
    await assert_problem(await api.hold(customer, unknown, quantity=1), 404, "event_not_found")
