"""Ticket types through the API: what an event sells, at what price, how many and when;
and bookings of several types at once, decided all or nothing."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from tests.assertions import assert_problem
from tests.client import Api, User, expect, future, item
from tests.test_check import check

TYPE_KEYS = {
    "id", "event_id", "name", "price_cents", "currency", "quota", "available_tickets",
    "sales_start", "sales_end", "max_per_booking", "status", "created_at", "updated_at",
    "on_sale", "waitlist_length", "waitlist_allow_skip",
}


def types_path(event: dict[str, Any], ticket_type: dict[str, Any] | str | None = None) -> str:
    path = f"/api/v1/events/{event['id']}/ticket-types"
    if ticket_type is None:
        return path
    return f"{path}/{ticket_type['id'] if isinstance(ticket_type, dict) else ticket_type}"


async def shown(api: Api, event: dict[str, Any], ticket_type: dict[str, Any]) -> dict[str, Any]:
    """The ticket type as anyone reads it now."""
    body: dict[str, Any] = await expect(await api.get(types_path(event, ticket_type)), 200)
    return body


async def general_admission(api: Api, event: dict[str, Any]) -> dict[str, Any]:
    """The free type every event is born with."""
    [general] = [t for t in await api.ticket_types(event) if t["name"] == "General admission"]
    return general


# -- create, list, read ----------------------------------------------------------------


async def test_an_organizer_adds_a_ticket_type(api: Api, organizer: User) -> None:
    event = await api.create_event(organizer, capacity=100)
    body = {
        "name": "VIP", "price_cents": 5000, "quota": 10, "max_per_booking": 4,
        "sales_start": future(1), "sales_end": future(5),
    }
    created = await expect(await api.post(types_path(event), organizer, json=body), 201)
    assert set(created) == TYPE_KEYS
    assert created["event_id"] == event["id"]
    assert (created["name"], created["price_cents"], created["currency"]) == ("VIP", 5000, "EUR")
    assert (created["quota"], created["available_tickets"]) == (10, 10)
    assert (created["max_per_booking"], created["status"]) == (4, "on_sale")
    assert created["sales_start"] is not None and created["sales_end"] is not None


async def test_a_types_available_tickets_are_bounded_by_the_event_too(
    api: Api, organizer: User
) -> None:
    event = await api.create_event(organizer, capacity=5)
    roomy = await api.add_ticket_type(organizer, event, quota=50)
    assert roomy["available_tickets"] == 5


async def test_every_event_is_born_with_one_free_general_admission_type(
    api: Api, organizer: User
) -> None:
    event = await api.create_event(organizer, capacity=30)
    [general] = await api.ticket_types(event)
    assert (general["name"], general["price_cents"], general["currency"]) == (
        "General admission", 0, "EUR"
    )
    assert (general["quota"], general["available_tickets"]) == (None, 30)
    assert (general["sales_start"], general["sales_end"], general["max_per_booking"]) == (
        None, None, None
    )


async def test_anyone_lists_the_types_in_the_order_they_were_added(
    api: Api, organizer: User
) -> None:
    event = await api.create_event(organizer)
    for name in ("Early bird", "Regular", "Balcony"):
        await api.add_ticket_type(organizer, event, name=name)
    page = await expect(await api.get(types_path(event)), 200)
    assert [t["name"] for t in page["items"]] == [
        "General admission", "Early bird", "Regular", "Balcony"
    ]
    assert page["next_cursor"] is None


async def test_the_types_of_an_unknown_event_are_not_found(api: Api) -> None:
    answer = await api.get(f"/api/v1/events/{uuid.uuid4()}/ticket-types")
    await assert_problem(answer, 404, "event_not_found")


async def test_anyone_reads_one_ticket_type(api: Api, organizer: User) -> None:
    event = await api.create_event(organizer)
    vip = await api.add_ticket_type(organizer, event, name="VIP", price_cents=9900)
    assert await shown(api, event, vip) == vip


@pytest.mark.parametrize("which", ["unknown", "another_events", "malformed"])
async def test_a_type_that_is_not_the_events_is_not_found(
    api: Api, organizer: User, which: str
) -> None:
    event = await api.create_event(organizer)
    other = await api.create_event(organizer)
    type_id = {
        "unknown": str(uuid.uuid4()),
        "another_events": (await general_admission(api, other))["id"],
        "malformed": "not-a-uuid",
    }[which]
    path = types_path(event, type_id)
    await assert_problem(await api.get(path), 404, "ticket_type_not_found")
    answer = await api.patch(path, organizer, json={"name": "Renamed"})
    await assert_problem(answer, 404, "ticket_type_not_found")
    await assert_problem(await api.delete(path, organizer), 404, "ticket_type_not_found")
    if which == "another_events":
        assert (await general_admission(api, other))["name"] == "General admission"


# -- change ----------------------------------------------------------------------------


async def test_a_patch_changes_only_the_fields_sent(api: Api, organizer: User) -> None:
    event = await api.create_event(organizer)
    vip = await api.add_ticket_type(
        organizer, event, name="VIP", price_cents=5000, quota=10, max_per_booking=2
    )
    changed = await expect(
        await api.patch(types_path(event, vip), organizer, json={"price_cents": 6000}), 200
    )
    assert changed["price_cents"] == 6000
    assert {k: changed[k] for k in ("name", "quota", "max_per_booking", "status")} == {
        "name": "VIP", "quota": 10, "max_per_booking": 2, "status": "on_sale"
    }
    assert await shown(api, event, vip) == changed


async def test_null_clears_the_quota_the_sales_window_and_the_per_booking_maximum(
    api: Api, organizer: User
) -> None:
    event = await api.create_event(organizer, capacity=40)
    vip = await api.add_ticket_type(
        organizer, event, quota=10, max_per_booking=2, sales_start=future(1), sales_end=future(2)
    )
    cleared = {"quota": None, "sales_start": None, "sales_end": None, "max_per_booking": None}
    changed = await expect(await api.patch(types_path(event, vip), organizer, json=cleared), 200)
    assert {k: changed[k] for k in cleared} == cleared
    assert changed["available_tickets"] == 40


async def test_a_new_price_applies_to_new_bookings_and_booked_prices_stay(
    api: Api, organizer: User, customer: User
) -> None:
    event = await api.create_event(organizer)
    vip = await api.add_ticket_type(organizer, event, price_cents=5000)
    first = await expect(await api.book(customer, event, items=[item(vip, 2)]), 201)
    await expect(
        await api.patch(types_path(event, vip), organizer, json={"price_cents": 7000}), 200
    )
    second = await expect(await api.book(customer, event, items=[item(vip, 1)]), 201)

    assert (second["total_cents"], second["items"][0]["price_cents"]) == (7000, 7000)
    booked = await expect(await api.get(f"/api/v1/bookings/{first['id']}", customer), 200)
    assert (booked["total_cents"], booked["items"][0]["price_cents"]) == (10000, 5000)


async def test_the_quota_cannot_go_below_the_tickets_sold_and_held(
    api: Api, organizer: User, customer: User
) -> None:
    event = await api.create_event(organizer)
    vip = await api.add_ticket_type(organizer, event, quota=10)
    await expect(await api.book(customer, event, items=[item(vip, 3)]), 201)
    await expect(await api.hold(customer, event, items=[item(vip, 1)]), 201)

    answer = await api.patch(types_path(event, vip), organizer, json={"quota": 3})
    problem = await assert_problem(answer, 409, "quota_below_taken")
    assert problem["taken"] == 4
    assert (await shown(api, event, vip))["quota"] == 10
    lowered = await expect(await api.patch(types_path(event, vip), organizer, json={"quota": 4}),
                           200)
    assert (lowered["quota"], lowered["available_tickets"]) == (4, 0)


async def test_two_types_of_one_event_cannot_share_a_name(api: Api, organizer: User) -> None:
    event = await api.create_event(organizer)
    await api.add_ticket_type(organizer, event, name="VIP")
    regular = await api.add_ticket_type(organizer, event, name="Regular")
    answer = await api.post(types_path(event), organizer, json={"name": "VIP", "price_cents": 0})
    await assert_problem(answer, 409, "ticket_type_name_taken")
    answer = await api.patch(types_path(event, regular), organizer, json={"name": "VIP"})
    await assert_problem(answer, 409, "ticket_type_name_taken")
    other = await api.create_event(organizer)
    await api.add_ticket_type(organizer, other, name="VIP")


# -- currency ---------------------------------------------------------------------------


async def test_an_event_created_in_dollars_sells_in_dollars(
    api: Api, organizer: User, customer: User
) -> None:
    event = await api.create_event(organizer, currency="USD")
    assert event["currency"] == "USD"
    assert (await api.get_event(event))["currency"] == "USD"
    vip = await api.add_ticket_type(organizer, event, price_cents=2500)
    assert vip["currency"] == "USD"
    booking = await expect(await api.book(customer, event, items=[item(vip, 2)]), 201)
    assert (booking["total_cents"], booking["currency"]) == (5000, "USD")


@pytest.mark.parametrize("currency", ["EURO", "eur", "XXY", "", 978])
async def test_an_event_in_an_unknown_currency_is_refused(
    api: Api, organizer: User, currency: Any
) -> None:
    answer = await api.post("/api/v1/events", organizer, json={
        "title": "Concert", "starts_at": future(), "capacity": 10, "currency": currency,
    })
    problem = await assert_problem(answer, 422, "validation_failed")
    assert set(problem["errors"]) == {"currency"}


async def test_the_first_priced_type_may_set_the_currency_of_an_event_without_sales(
    api: Api, organizer: User
) -> None:
    event = await api.create_event(organizer)
    vip = await api.add_ticket_type(organizer, event, price_cents=1000, currency="GBP")
    assert vip["currency"] == "GBP"
    assert (await api.get_event(event))["currency"] == "GBP"
    assert {t["currency"] for t in await api.ticket_types(event)} == {"GBP"}


async def test_another_currency_is_refused_once_the_event_has_a_priced_type(
    api: Api, organizer: User
) -> None:
    event = await api.create_event(organizer)
    await api.add_ticket_type(organizer, event, name="VIP", price_cents=1000)
    answer = await api.post(
        types_path(event), organizer, json={"name": "Cheap", "price_cents": 500, "currency": "USD"}
    )
    problem = await assert_problem(answer, 409, "currency_mismatch")
    assert problem["currency"] == "EUR"
    assert (await api.get_event(event))["currency"] == "EUR"
    same = await api.add_ticket_type(organizer, event, price_cents=500, currency="EUR")
    assert same["currency"] == "EUR"


async def test_another_currency_is_refused_once_the_event_has_sales(
    api: Api, organizer: User, customer: User
) -> None:
    event = await api.create_event(organizer)
    general = await general_admission(api, event)
    await expect(await api.book(customer, event, quantity=1), 201)
    answer = await api.patch(types_path(event, general), organizer,
                             json={"price_cents": 100, "currency": "USD"})
    await assert_problem(answer, 409, "currency_mismatch")
    assert (await api.get_event(event))["currency"] == "EUR"


# -- validation, rights ----------------------------------------------------------------


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "   ", "price_cents": 0}, "name"),
    ({"name": "", "price_cents": 0}, "name"),
    ({"price_cents": 0}, "name"),
    ({"name": "VIP"}, "price_cents"),
    ({"name": "VIP", "price_cents": -1}, "price_cents"),
    ({"name": "VIP", "price_cents": "10"}, "price_cents"),
    ({"name": "VIP", "price_cents": 0, "currency": "EURO"}, "currency"),
    ({"name": "VIP", "price_cents": 0, "currency": "eur"}, "currency"),
    ({"name": "VIP", "price_cents": 0, "currency": "XXY"}, "currency"),
    ({"name": "VIP", "price_cents": 0, "quota": 0}, "quota"),
    ({"name": "VIP", "price_cents": 0, "max_per_booking": 0}, "max_per_booking"),
    ({"name": "VIP", "price_cents": 0, "status": "sold"}, "status"),
    ({"name": "VIP", "price_cents": 0, "sales_start": future(2), "sales_end": future(1)},
     "sales_end"),
    ({"name": "VIP", "price_cents": 0, "colour": "gold"}, "colour"),
])
async def test_an_invalid_new_type_is_refused(
    api: Api, organizer: User, body: dict[str, Any], field: str
) -> None:
    event = await api.create_event(organizer)
    problem = await assert_problem(
        await api.post(types_path(event), organizer, json=body), 422, "validation_failed"
    )
    assert set(problem["errors"]) == {field}
    assert len(await api.ticket_types(event)) == 1


@pytest.mark.parametrize(("body", "field"), [
    ({"name": " "}, "name"),
    ({"price_cents": -5}, "price_cents"),
    ({"currency": "usd"}, "currency"),
    ({"sales_end": future(0.5)}, "sales_end"),
    ({"colour": "gold"}, "colour"),
])
async def test_an_invalid_change_is_refused(
    api: Api, organizer: User, body: dict[str, Any], field: str
) -> None:
    event = await api.create_event(organizer)
    vip = await api.add_ticket_type(organizer, event, name="VIP", sales_start=future(1))
    problem = await assert_problem(
        await api.patch(types_path(event, vip), organizer, json=body), 422, "validation_failed"
    )
    assert set(problem["errors"]) == {field}
    assert await shown(api, event, vip) == vip


async def test_an_empty_change_is_refused(api: Api, organizer: User) -> None:
    event = await api.create_event(organizer)
    general = await general_admission(api, event)
    answer = await api.patch(types_path(event, general), organizer, json={})
    await assert_problem(answer, 422, "validation_failed")


async def test_only_the_events_organizer_keeps_its_types(
    api: Api, organizer: User, customer: User
) -> None:
    event = await api.create_event(organizer)
    general = await general_admission(api, event)
    stranger = await api.register(role="organizer")
    new = {"name": "VIP", "price_cents": 0}
    for user, status, code in ((stranger, 403, "not_event_owner"),
                               (customer, 403, "forbidden_role")):
        await assert_problem(await api.post(types_path(event), user, json=new), status, code)
        answer = await api.patch(types_path(event, general), user, json={"name": "Mine"})
        await assert_problem(answer, status, code)
        await assert_problem(await api.delete(types_path(event, general), user), status, code)
    assert [t["name"] for t in await api.ticket_types(event)] == ["General admission"]


async def test_changing_types_needs_a_token(api: Api, organizer: User) -> None:
    event = await api.create_event(organizer)
    general = await general_admission(api, event)
    answers = [
        await api.post(types_path(event), json={"name": "VIP", "price_cents": 0}),
        await api.patch(types_path(event, general), json={"name": "Mine"}),
        await api.delete(types_path(event, general)),
    ]
    for answer in answers:
        await assert_problem(answer, 401, "unauthorized")
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")


async def test_the_types_of_a_cancelled_event_are_not_changed_nor_sold(
    api: Api, organizer: User
) -> None:
    event = await api.create_event(organizer, capacity=10)
    general = await general_admission(api, event)
    await expect(await api.post(f"/api/v1/events/{event['id']}/cancel", organizer), 200)
    answer = await api.post(types_path(event), organizer, json={"name": "VIP", "price_cents": 0})
    await assert_problem(answer, 409, "event_cancelled")
    answer = await api.patch(types_path(event, general), organizer, json={"price_cents": 100})
    await assert_problem(answer, 409, "event_cancelled")
    assert (await shown(api, event, general))["available_tickets"] == 0


# -- delete ------------------------------------------------------------------------------


async def test_a_type_nothing_was_sold_of_is_deleted(api: Api, organizer: User) -> None:
    event = await api.create_event(organizer)
    vip = await api.add_ticket_type(organizer, event, name="VIP")
    answer = await api.delete(types_path(event, vip), organizer)
    assert answer.status == 204
    await assert_problem(await api.get(types_path(event, vip)), 404, "ticket_type_not_found")
    assert [t["name"] for t in await api.ticket_types(event)] == ["General admission"]


@pytest.mark.parametrize("taken_by", ["booking", "released_hold"])
async def test_a_type_with_sales_is_closed_not_deleted(
    api: Api, organizer: User, customer: User, taken_by: str
) -> None:
    event = await api.create_event(organizer)
    vip = await api.add_ticket_type(organizer, event, name="VIP")
    if taken_by == "booking":
        await expect(await api.book(customer, event, items=[item(vip, 1)]), 201)
    else:
        held = await expect(await api.hold(customer, event, items=[item(vip, 1)]), 201)
        assert (await api.delete(f"/api/v1/holds/{held['id']}", customer)).status == 204

    answer = await api.delete(types_path(event, vip), organizer)
    await assert_problem(answer, 409, "ticket_type_has_sales")
    closed = await expect(
        await api.patch(types_path(event, vip), organizer, json={"status": "closed"}), 200
    )
    assert closed["status"] == "closed"


async def test_an_event_keeps_its_last_type(api: Api, organizer: User) -> None:
    event = await api.create_event(organizer)
    vip = await api.add_ticket_type(organizer, event, name="VIP")
    general = await general_admission(api, event)
    assert (await api.delete(types_path(event, general), organizer)).status == 204
    await assert_problem(await api.delete(types_path(event, vip), organizer), 409,
                         "last_ticket_type")
    assert [t["name"] for t in await api.ticket_types(event)] == ["VIP"]


# -- bookings of several types ---------------------------------------------------------


async def test_a_booking_of_two_types_at_once(
    api: Api, organizer: User, customer: User
) -> None:
    event = await api.create_event(organizer, capacity=20)
    vip = await api.add_ticket_type(organizer, event, name="VIP", price_cents=5000, quota=5)
    balcony = await api.add_ticket_type(organizer, event, name="Balcony", price_cents=1500)
    booking = await expect(
        await api.book(customer, event, items=[item(vip, 2), item(balcony, 3)]), 201
    )
    assert booking["quantity"] == 5
    assert (booking["total_cents"], booking["currency"]) == (2 * 5000 + 3 * 1500, "EUR")
    assert sorted((i["ticket_type_id"], i["name"], i["quantity"], i["price_cents"])
                  for i in booking["items"]) == sorted([
        (vip["id"], "VIP", 2, 5000), (balcony["id"], "Balcony", 3, 1500)
    ])
    assert (await api.get_event(event))["available_tickets"] == 15
    assert (await shown(api, event, vip))["available_tickets"] == 3
    assert (await shown(api, event, balcony))["available_tickets"] == 15


async def test_one_sold_out_item_refuses_the_whole_booking(
    api: Api, organizer: User, customer: User
) -> None:
    event = await api.create_event(organizer, capacity=20)
    vip = await api.add_ticket_type(organizer, event, name="VIP", quota=2)
    general = await general_admission(api, event)
    answer = await api.book(customer, event, items=[item(general, 1), item(vip, 3)])
    problem = await assert_problem(answer, 409, "sold_out")
    assert (problem["ticket_type_id"], problem["available_tickets"]) == (vip["id"], 2)

    assert (await api.get_event(event))["available_tickets"] == 20
    assert (await shown(api, event, general))["available_tickets"] == 20
    assert (await shown(api, event, vip))["available_tickets"] == 2
    mine = await expect(await api.get("/api/v1/bookings", customer), 200)
    assert mine["items"] == []


async def test_the_event_capacity_bounds_all_types_together(
    api: Api, organizer: User, customer: User
) -> None:
    event = await api.create_event(organizer, capacity=5)
    general = await general_admission(api, event)
    balcony = await api.add_ticket_type(organizer, event, name="Balcony")

    together = await api.book(customer, event, items=[item(general, 3), item(balcony, 3)])
    problem = await assert_problem(together, 409, "sold_out")
    assert (problem["ticket_type_id"], problem["available_tickets"]) == (None, 5)

    await expect(await api.book(customer, event, items=[item(general, 3)]), 201)
    assert (await shown(api, event, balcony))["available_tickets"] == 2
    problem = await assert_problem(
        await api.book(customer, event, items=[item(balcony, 3)]), 409, "sold_out"
    )
    assert problem["available_tickets"] == 2
    await expect(await api.book(customer, event, items=[item(balcony, 2)]), 201)
    assert (await api.get_event(event))["available_tickets"] == 0


async def test_a_quantity_alone_is_refused_once_the_event_sells_several_types(
    api: Api, organizer: User, customer: User
) -> None:
    event = await api.create_event(organizer, capacity=10)
    vip = await api.add_ticket_type(organizer, event, name="VIP")
    await assert_problem(await api.book(customer, event, quantity=2), 422,
                         "ticket_type_required")
    await assert_problem(await api.book(customer, event, quantity=None), 422,
                         "ticket_type_required")
    assert (await api.get_event(event))["available_tickets"] == 10
    assert (await api.delete(types_path(event, vip), organizer)).status == 204
    booking = await expect(await api.book(customer, event, quantity=2), 201)
    assert [i["name"] for i in booking["items"]] == ["General admission"]


@pytest.mark.parametrize("shape", ["quantity_and_items", "same_type_twice", "no_items",
                                   "item_without_quantity", "zero_quantity", "over_100"])
async def test_a_malformed_list_of_items_is_refused(
    api: Api, organizer: User, customer: User, shape: str
) -> None:
    event = await api.create_event(organizer)
    vip = await api.add_ticket_type(organizer, event, name="VIP")
    general = await general_admission(api, event)
    body = {
        "quantity_and_items": {"quantity": 1, "items": [item(vip, 1)]},
        "same_type_twice": {"items": [item(vip, 1), item(vip, 2)]},
        "no_items": {"items": []},
        "item_without_quantity": {"items": [{"ticket_type_id": vip["id"]}]},
        "zero_quantity": {"items": [item(vip, 0)]},
        "over_100": {"items": [item(vip, 60), item(general, 41)]},
    }[shape]
    answer = await api.post(f"/api/v1/events/{event['id']}/bookings", customer, json=body)
    problem = await assert_problem(answer, 422, "validation_failed")
    assert set(problem["errors"]) == {"items"}


@pytest.mark.parametrize("which", ["another_events", "unknown"])
async def test_a_type_the_event_does_not_sell_is_an_unknown_ticket_type(
    api: Api, organizer: User, customer: User, which: str
) -> None:
    event = await api.create_event(organizer, capacity=10)
    other = await api.create_event(organizer)
    foreign = (await general_admission(api, other))["id"] if which == "another_events" \
        else str(uuid.uuid4())
    general = await general_admission(api, event)
    answer = await api.book(customer, event, items=[
        item(general, 1), {"ticket_type_id": foreign, "quantity": 1}
    ])
    problem = await assert_problem(answer, 422, "unknown_ticket_type")
    assert problem["ticket_type_id"] == foreign
    assert (await api.get_event(event))["available_tickets"] == 10


@pytest.mark.parametrize("sale", [
    {"status": "closed"},
    {"sales_start": future(1)},
    {"sales_start": future(-2), "sales_end": future(-1)},
], ids=["closed", "not_yet", "over"])
async def test_a_type_off_sale_is_not_booked(
    api: Api, organizer: User, customer: User, sale: dict[str, Any]
) -> None:
    event = await api.create_event(organizer, capacity=10)
    vip = await api.add_ticket_type(organizer, event, name="VIP", **sale)
    general = await general_admission(api, event)
    answer = await api.book(customer, event, items=[item(general, 1), item(vip, 1)])
    problem = await assert_problem(answer, 409, "ticket_type_not_on_sale")
    assert problem["ticket_type_id"] == vip["id"]
    assert not (await expect(await api.get(types_path(event, vip)), 200))["on_sale"]
    assert (await api.get_event(event))["available_tickets"] == 10
    await expect(await api.book(customer, event, items=[item(general, 1)]), 201)


async def test_a_type_on_sale_inside_its_window_is_booked(
    api: Api, organizer: User, customer: User
) -> None:
    event = await api.create_event(organizer)
    vip = await api.add_ticket_type(organizer, event, sales_start=future(-1), sales_end=future(1))
    assert vip["on_sale"]
    await expect(await api.book(customer, event, items=[item(vip, 1)]), 201)


async def test_a_types_per_booking_maximum_is_enforced(
    api: Api, organizer: User, customer: User
) -> None:
    event = await api.create_event(organizer, max_tickets_per_booking=10)
    vip = await api.add_ticket_type(organizer, event, name="VIP", max_per_booking=2)
    problem = await assert_problem(
        await api.book(customer, event, items=[item(vip, 3)]), 422, "validation_failed"
    )
    assert vip["id"] in problem["errors"]["items"][0]
    await expect(await api.book(customer, event, items=[item(vip, 2)]), 201)


async def test_the_events_per_booking_maximum_counts_every_item(
    api: Api, organizer: User, customer: User
) -> None:
    event = await api.create_event(organizer, max_tickets_per_booking=4)
    vip = await api.add_ticket_type(organizer, event, name="VIP")
    general = await general_admission(api, event)
    answer = await api.book(customer, event, items=[item(general, 2), item(vip, 3)])
    problem = await assert_problem(answer, 422, "validation_failed")
    assert problem["errors"] == {"items": ["At most 4 tickets per booking for this event."]}
    await expect(await api.book(customer, event, items=[item(general, 2), item(vip, 2)]), 201)


async def test_the_per_customer_cap_counts_bookings_and_live_holds_of_every_type(
    api: Api, organizer: User, customer: User
) -> None:
    event = await api.create_event(organizer, max_tickets_per_customer=5)
    vip = await api.add_ticket_type(organizer, event, name="VIP")
    general = await general_admission(api, event)
    await expect(await api.book(customer, event, items=[item(general, 2)]), 201)
    held = await expect(await api.hold(customer, event, items=[item(vip, 2)]), 201)

    answer = await api.book(customer, event, items=[item(general, 1), item(vip, 1)])
    problem = await assert_problem(answer, 409, "customer_limit_reached")
    assert problem["customer_tickets_left"] == 1

    assert (await api.delete(f"/api/v1/holds/{held['id']}", customer)).status == 204
    await expect(await api.book(customer, event, items=[item(general, 1), item(vip, 2)]), 201)
    someone_else = await api.register()
    await expect(await api.book(someone_else, event, items=[item(vip, 5)]), 201)


async def test_my_bookings_and_one_booking_show_their_items(
    api: Api, organizer: User, customer: User
) -> None:
    event = await api.create_event(organizer)
    vip = await api.add_ticket_type(organizer, event, name="VIP", price_cents=3000)
    general = await general_admission(api, event)
    booking = await expect(
        await api.book(customer, event, items=[item(vip, 1), item(general, 2)]), 201
    )
    [listed] = (await expect(await api.get("/api/v1/bookings", customer), 200))["items"]
    one = await expect(await api.get(f"/api/v1/bookings/{booking['id']}", customer), 200)
    by_organizer = await expect(await api.get(f"/api/v1/bookings/{booking['id']}", organizer),
                                200)
    for seen in (listed, one, by_organizer):
        assert sorted(seen["items"], key=lambda i: i["name"]) == sorted(
            booking["items"], key=lambda i: i["name"]
        )
        assert (seen["total_cents"], seen["currency"]) == (3000, "EUR")


async def test_cancelling_a_booking_gives_each_type_its_tickets_back(
    api: Api, organizer: User, customer: User
) -> None:
    event = await api.create_event(organizer, capacity=10)
    vip = await api.add_ticket_type(organizer, event, name="VIP", quota=3)
    general = await general_admission(api, event)
    booking = await expect(
        await api.book(customer, event, items=[item(vip, 3), item(general, 1)]), 201
    )
    assert (await shown(api, event, vip))["available_tickets"] == 0
    await expect(await api.post(f"/api/v1/bookings/{booking['id']}/cancel", customer), 200)
    assert (await shown(api, event, vip))["available_tickets"] == 3
    assert (await shown(api, event, general))["available_tickets"] == 10
    assert (await api.get_event(event))["available_tickets"] == 10
    await expect(await api.book(customer, event, items=[item(vip, 3)]), 201)


async def test_an_idempotency_key_replays_a_booking_of_items(
    api: Api, organizer: User, customer: User
) -> None:
    event = await api.create_event(organizer, capacity=10)
    vip = await api.add_ticket_type(organizer, event, name="VIP")
    general = await general_admission(api, event)
    items = [item(vip, 2), item(general, 1)]
    first = await expect(await api.book(customer, event, key="order-7", items=items), 201)
    again = await expect(
        await api.book(customer, event, key="order-7", items=list(reversed(items))), 200
    )
    assert again["id"] == first["id"] and again["items"] == first["items"]
    assert (await api.get_event(event))["available_tickets"] == 7

    other = await api.book(customer, event, key="order-7", items=[item(vip, 1), item(general, 1)])
    await assert_problem(other, 422, "idempotency_key_reused")
    alone = await api.book(customer, event, key="order-7", items=[item(vip, 2)])
    await assert_problem(alone, 422, "idempotency_key_reused")
    assert (await api.get_event(event))["available_tickets"] == 7


# -- eventbook check -------------------------------------------------------------------


async def test_check_reports_a_type_whose_taken_count_disagrees(
    api: Api, organizer: User, customer: User, config: Any, pool: asyncpg.Pool
) -> None:
    event = await api.create_event(organizer, capacity=10)
    vip = await api.add_ticket_type(organizer, event, name="VIP", quota=5)
    await expect(await api.book(customer, event, items=[item(vip, 2)]), 201)
    assert check(config)[0] == 0
    await pool.execute("UPDATE ticket_types SET taken = 3 WHERE id = $1", vip["id"])

    code, report = check(config)
    assert code == 1
    [finding] = report["ticket_type_counts"]
    assert (finding["id"], finding["event_id"], finding["name"]) == (vip["id"], event["id"], "VIP")
    assert (finding["taken"], finding["expected_taken"]) == (3, 2)
    assert report["ticket_counts"] == []
