"""Events: publish, read, change, cancel, browse, attendees; who may do which."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable

import pytest

from eventbook.keys import SEARCH_POOL
from tests.assertions import assert_problem
from tests.client import Api, User, expect, future
from tests.seed import insert_users, move_event

EVENT_KEYS = {
    "id", "organizer_id", "title", "description", "venue", "starts_at", "ends_at", "capacity",
    "available_tickets", "max_tickets_per_booking", "max_tickets_per_customer", "status",
    "version", "created_at", "updated_at",
    "currency",
}


def at(hours: float) -> str:
    """A time `hours` from a fixed point next month, so tests can order events exactly."""
    base = dt.datetime.now(dt.UTC).replace(microsecond=0, second=0, minute=0)
    return (base + dt.timedelta(days=30, hours=hours)).isoformat()


async def titles(api: Api, **params) -> list[str]:
    body = await expect(await api.get("/api/v1/events", params=params), 200)
    return [event["title"] for event in body["items"]]


# -- publish ---------------------------------------------------------------------------


async def test_an_organizer_publishes_an_event(api: Api, organizer) -> None:
    answer = await api.post(
        "/api/v1/events", organizer,
        json={"title": "Concert", "description": "Loud", "venue": "Hall", "capacity": 50,
              "starts_at": "2099-05-01T20:00:00+02:00", "ends_at": "2099-05-01T23:00:00+02:00"},
    )
    event = await expect(answer, 201)
    assert set(event) == EVENT_KEYS
    assert event["organizer_id"] == organizer.id
    assert event["available_tickets"] == 50
    assert event["max_tickets_per_booking"] == 10
    assert event["max_tickets_per_customer"] is None
    assert event["status"] == "scheduled"
    assert event["version"] == 1
    assert event["starts_at"] == "2099-05-01T18:00:00+00:00"
    assert event["ends_at"] == "2099-05-01T21:00:00+00:00"


async def test_optional_fields_default_to_empty(api: Api, organizer) -> None:
    event = await api.create_event(organizer)
    assert event["description"] == ""
    assert event["venue"] is None
    assert event["ends_at"] is None


async def test_a_customer_cannot_publish_an_event(api: Api, customer) -> None:
    answer = await api.post(
        "/api/v1/events", customer, json={"title": "X", "starts_at": future(), "capacity": 1}
    )
    await assert_problem(answer, 403, "forbidden_role")


async def test_publishing_needs_a_token(api: Api) -> None:
    answer = await api.post(
        "/api/v1/events", json={"title": "X", "starts_at": future(), "capacity": 1}
    )
    await assert_problem(answer, 401, "unauthorized")


@pytest.mark.parametrize(
    "field, value",
    [
        ("id", "6f1c7d0e-1e0b-4c53-9d2f-9d5b0b8a0a01"),
        ("available_tickets", 1000),
        ("organizer_id", "6f1c7d0e-1e0b-4c53-9d2f-9d5b0b8a0a01"),
        ("version", 7),
        ("status", "cancelled"),
        ("created_at", "2020-01-01T00:00:00+00:00"),
    ],
)
async def test_a_client_cannot_set_server_fields(api: Api, organizer, field, value) -> None:
    body = {"title": "X", "starts_at": future(), "capacity": 5, field: value}
    problem = await assert_problem(
        await api.post("/api/v1/events", organizer, json=body), 422, "validation_failed"
    )
    assert set(problem["errors"]) == {field}


@pytest.mark.parametrize(
    "field, value",
    [
        ("title", ""),
        ("title", "   "),
        ("title", "t" * 201),
        ("title", None),
        ("title", "nul\x00byte"),
        ("title", "Concert\r\nBcc: everyone@example.com"),
        ("title", "tab\there"),
        ("title", "bell\x07"),
        ("title", "C1\x85control"),
        ("title", "\u202eright to left override"),
        ("title", "isolate\u2066d"),
        ("title", "line\u2028separator"),
        ("venue", "Hall\nB"),
        ("venue", "paragraph\u2029separator"),
        ("description", "escape\x1b[31mred"),
        ("description", "\u202ereversed"),
        ("description", "d" * 10_001),
        ("venue", "v" * 201),
        ("starts_at", "2001-01-01T00:00:00+00:00"),
        ("starts_at", "2099-01-01T00:00:00"),
        ("starts_at", "2099-01-01"),
        ("starts_at", "next tuesday"),
        ("starts_at", "9999-12-31T23:00:00-05:00"),
        ("capacity", 0),
        ("capacity", 1_000_001),
        ("capacity", "10"),
        ("capacity", True),
        ("capacity", 2.5),
        ("max_tickets_per_booking", 0),
        ("max_tickets_per_booking", 101),
        ("max_tickets_per_customer", 0),
        ("max_tickets_per_customer", 1_000_001),
        ("max_tickets_per_customer", "4"),
        ("max_tickets_per_customer", 2.5),
    ],
)
async def test_an_invalid_field_is_refused(api: Api, organizer, field, value) -> None:
    body = {"title": "X", "starts_at": future(), "capacity": 5, field: value}
    problem = await assert_problem(
        await api.post("/api/v1/events", organizer, json=body), 422, "validation_failed"
    )
    assert set(problem["errors"]) == {field}


async def test_an_event_caps_the_tickets_of_each_customer(api: Api, organizer) -> None:
    event = await api.create_event(
        organizer, max_tickets_per_customer=6, max_tickets_per_booking=2
    )
    assert (event["max_tickets_per_customer"], event["max_tickets_per_booking"]) == (6, 2)
    assert (await api.get_event(event))["max_tickets_per_customer"] == 6


async def test_a_cap_below_the_default_per_booking_maximum_lowers_it(
    api: Api, organizer
) -> None:
    event = await api.create_event(organizer, max_tickets_per_customer=4)
    assert (event["max_tickets_per_customer"], event["max_tickets_per_booking"]) == (4, 4)


async def test_a_cap_below_the_per_booking_maximum_is_refused(api: Api, organizer) -> None:
    body = {"title": "X", "starts_at": future(), "capacity": 50,
            "max_tickets_per_customer": 3, "max_tickets_per_booking": 5}
    problem = await assert_problem(
        await api.post("/api/v1/events", organizer, json=body), 422, "validation_failed"
    )
    assert set(problem["errors"]) == {"max_tickets_per_customer"}


async def test_text_keeps_any_script_and_emoji_and_descriptions_keep_their_lines(
    api: Api, organizer
) -> None:
    text = {"title": "Café 🎸 العربية 👨\u200d👩\u200d👧", "venue": "Salle Pleyel",
            "description": "Line one\r\nLine two\n\tindented"}
    event = await api.create_event(organizer, **text)
    assert {name: event[name] for name in text} == text


@pytest.mark.parametrize("missing", ["title", "starts_at", "capacity"])
async def test_a_required_field_is_required(api: Api, organizer, missing) -> None:
    body = {"title": "X", "starts_at": future(), "capacity": 5}
    del body[missing]
    problem = await assert_problem(
        await api.post("/api/v1/events", organizer, json=body), 422, "validation_failed"
    )
    assert set(problem["errors"]) == {missing}


@pytest.mark.parametrize("hours_after_start", [0, -1])
async def test_ends_at_must_come_after_starts_at(api: Api, organizer, hours_after_start) -> None:
    body = {"title": "X", "starts_at": at(0), "ends_at": at(hours_after_start), "capacity": 5}
    problem = await assert_problem(
        await api.post("/api/v1/events", organizer, json=body), 422, "validation_failed"
    )
    assert set(problem["errors"]) == {"ends_at"}


# -- read ------------------------------------------------------------------------------


async def test_anyone_reads_an_event(api: Api, organizer) -> None:
    event = await api.create_event(organizer, title="Open day")
    assert (await expect(await api.get(f"/api/v1/events/{event['id']}"), 200)) == event


async def test_an_unknown_event_is_a_404(api: Api) -> None:
    answer = await api.get(f"/api/v1/events/{uuid.uuid4()}")
    await assert_problem(answer, 404, "event_not_found")


async def test_a_malformed_event_id_is_a_404_not_a_500(api: Api) -> None:
    await assert_problem(await api.get("/api/v1/events/not-a-uuid"), 404, "event_not_found")


# -- change ----------------------------------------------------------------------------


async def test_the_organizer_changes_an_event_and_its_version_goes_up(
    api: Api, organizer
) -> None:
    event = await api.create_event(organizer, title="Draft", venue="Hall")
    answer = await api.patch(
        f"/api/v1/events/{event['id']}", organizer, json={"title": "Final", "venue": None}
    )
    changed = await expect(answer, 200)
    assert changed["title"] == "Final"
    assert changed["venue"] is None
    assert changed["version"] == event["version"] + 1
    assert changed["starts_at"] == event["starts_at"]
    assert changed == await api.get_event(event)


async def test_another_organizer_cannot_change_an_event(api: Api, organizer) -> None:
    event = await api.create_event(organizer)
    other = await api.register(role="organizer")
    answer = await api.patch(f"/api/v1/events/{event['id']}", other, json={"title": "Mine"})
    await assert_problem(answer, 403, "not_event_owner")
    assert (await api.get_event(event))["title"] == event["title"]


async def test_a_customer_cannot_change_an_event(api: Api, organizer, customer) -> None:
    event = await api.create_event(organizer)
    answer = await api.patch(f"/api/v1/events/{event['id']}", customer, json={"title": "Mine"})
    await assert_problem(answer, 403, "forbidden_role")


async def test_changing_an_unknown_event_is_a_404(api: Api, organizer) -> None:
    answer = await api.patch(f"/api/v1/events/{uuid.uuid4()}", organizer, json={"title": "X"})
    await assert_problem(answer, 404, "event_not_found")


async def test_a_change_needs_at_least_one_field(api: Api, organizer) -> None:
    event = await api.create_event(organizer)
    answer = await api.patch(f"/api/v1/events/{event['id']}", organizer, json={})
    problem = await assert_problem(answer, 422, "validation_failed")
    assert "_schema" in problem["errors"]


@pytest.mark.parametrize(
    "change",
    [
        {"title": None},
        {"starts_at": None},
        {"capacity": None},
        {"max_tickets_per_booking": None},
        {"starts_at": "2001-01-01T00:00:00+00:00"},
        {"starts_at": "2099-01-01T00:00:00"},
        {"capacity": 0},
        {"title": "New\r\ntitle"},
        {"venue": "Hall\u2028B"},
        {"description": "form\x0cfeed"},
        {"available_tickets": 5},
        {"version": 9},
        {"status": "cancelled"},
    ],
)
async def test_an_invalid_change_is_refused(api: Api, organizer, change) -> None:
    event = await api.create_event(organizer)
    answer = await api.patch(f"/api/v1/events/{event['id']}", organizer, json=change)
    problem = await assert_problem(answer, 422, "validation_failed")
    assert set(problem["errors"]) == set(change)


async def test_ends_at_before_the_existing_start_is_refused(api: Api, organizer) -> None:
    event = await api.create_event(organizer, starts_at=future(7))
    answer = await api.patch(
        f"/api/v1/events/{event['id']}", organizer, json={"ends_at": future(6)}
    )
    problem = await assert_problem(answer, 422, "validation_failed")
    assert set(problem["errors"]) == {"ends_at"}


async def test_moving_the_start_past_the_existing_end_is_refused(api: Api, organizer) -> None:
    event = await api.create_event(organizer, starts_at=future(7), ends_at=future(8))
    answer = await api.patch(
        f"/api/v1/events/{event['id']}", organizer, json={"starts_at": future(9)}
    )
    await assert_problem(answer, 422, "validation_failed")
    assert (await api.get_event(event))["version"] == 1


async def test_the_organizer_sets_and_lifts_the_per_customer_cap(api: Api, organizer) -> None:
    event = await api.create_event(organizer, max_tickets_per_booking=2)
    path = f"/api/v1/events/{event['id']}"
    capped = await expect(
        await api.patch(path, organizer, json={"max_tickets_per_customer": 4}), 200
    )
    assert capped["max_tickets_per_customer"] == 4
    assert capped["version"] == 2
    lifted = await expect(
        await api.patch(path, organizer, json={"max_tickets_per_customer": None}), 200
    )
    assert lifted["max_tickets_per_customer"] is None
    assert lifted == await api.get_event(event)


async def test_a_change_cannot_leave_the_cap_below_the_per_booking_maximum(
    api: Api, organizer
) -> None:
    event = await api.create_event(organizer)  # max_tickets_per_booking 10
    path = f"/api/v1/events/{event['id']}"
    problem = await assert_problem(
        await api.patch(path, organizer, json={"max_tickets_per_customer": 4}),
        422, "validation_failed",
    )
    assert set(problem["errors"]) == {"max_tickets_per_customer"}
    both = {"max_tickets_per_customer": 4, "max_tickets_per_booking": 4}
    await expect(await api.patch(path, organizer, json=both), 200)
    problem = await assert_problem(
        await api.patch(path, organizer, json={"max_tickets_per_booking": 5}),
        422, "validation_failed",
    )
    assert set(problem["errors"]) == {"max_tickets_per_booking"}
    assert (await api.get_event(event))["max_tickets_per_booking"] == 4


async def test_remaining_tickets_follow_a_capacity_change(api: Api, organizer, customer) -> None:
    event = await api.create_event(organizer, capacity=10)
    await expect(await api.book(customer, event, quantity=4), 201)
    answer = await api.patch(f"/api/v1/events/{event['id']}", organizer, json={"capacity": 20})
    changed = await expect(answer, 200)
    assert (changed["capacity"], changed["available_tickets"]) == (20, 16)


async def test_capacity_cannot_go_below_tickets_sold(api: Api, organizer, customer) -> None:
    event = await api.create_event(organizer, capacity=10)
    await expect(await api.book(customer, event, quantity=6), 201)
    answer = await api.patch(f"/api/v1/events/{event['id']}", organizer, json={"capacity": 5})
    problem = await assert_problem(answer, 409, "capacity_below_sold")
    assert problem["sold"] == 6
    assert (await api.get_event(event))["capacity"] == 10


async def test_capacity_may_equal_tickets_sold(api: Api, organizer, customer) -> None:
    event = await api.create_event(organizer, capacity=10)
    await expect(await api.book(customer, event, quantity=6), 201)
    answer = await api.patch(f"/api/v1/events/{event['id']}", organizer, json={"capacity": 6})
    assert (await expect(answer, 200))["available_tickets"] == 0


async def test_a_cancelled_event_cannot_change(api: Api, organizer) -> None:
    event = await api.create_event(organizer)
    await expect(await api.post(f"/api/v1/events/{event['id']}/cancel", organizer), 200)
    answer = await api.patch(f"/api/v1/events/{event['id']}", organizer, json={"title": "Back"})
    await assert_problem(answer, 409, "event_cancelled")


async def test_an_event_that_has_ended_cannot_change(api: Api, organizer, pool) -> None:
    event = await api.create_event(organizer, title="Last night")
    await move_event(pool, event, starts="-3 hours", ends="-1 hour")
    answer = await api.patch(f"/api/v1/events/{event['id']}", organizer, json={"title": "Oops"})
    await assert_problem(answer, 409, "event_ended")
    assert (await api.get_event(event))["title"] == "Last night"
    assert (await api.get_event(event))["version"] == 1
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_an_event_without_an_end_has_ended_once_it_started(
    api: Api, organizer, pool
) -> None:
    event = await api.create_event(organizer)
    await move_event(pool, event, starts="-1 minute")
    answer = await api.patch(f"/api/v1/events/{event['id']}", organizer, json={"venue": "Hall"})
    await assert_problem(answer, 409, "event_ended")


async def test_an_event_under_way_can_still_change(api: Api, organizer, pool) -> None:
    event = await api.create_event(organizer)
    await move_event(pool, event, starts="-1 hour", ends="1 hour")
    answer = await api.patch(f"/api/v1/events/{event['id']}", organizer, json={"venue": "Hall"})
    assert (await expect(answer, 200))["venue"] == "Hall"


async def test_changes_waiting_while_the_event_ends_are_refused(api: Api, organizer, pool) -> None:
    event = await api.create_event(organizer)
    async with pool.acquire() as conn, conn.transaction():
        # The end arrives while every change waits for the event's row.
        await move_event(conn, event, starts="-2 hours", ends="-1 second")
        changes = asyncio.gather(*(
            api.patch(f"/api/v1/events/{event['id']}", organizer, json={"title": f"Take {n}"})
            for n in range(50)
        ), api.post(f"/api/v1/events/{event['id']}/cancel", organizer))
        await asyncio.sleep(0.5)
    answers = await changes
    assert {answer.status for answer in answers} == {409}
    assert {(await answer.json())["code"] for answer in answers} == {"event_ended"}
    assert (await api.get_event(event))["version"] == 1


# -- cancel ----------------------------------------------------------------------------


async def test_cancelling_an_event_cancels_its_bookings(
    api: Api, organizer, customer, pool
) -> None:
    event = await api.create_event(organizer, capacity=10)
    booking = await expect(await api.book(customer, event, quantity=3), 201)
    cancelled = await expect(await api.post(f"/api/v1/events/{event['id']}/cancel", organizer), 200)
    assert cancelled["status"] == "cancelled"
    assert cancelled["version"] == event["version"] + 1
    assert cancelled["available_tickets"] == 10
    seen = await expect(await api.get(f"/api/v1/bookings/{booking['id']}", customer), 200)
    assert seen["status"] == "cancelled"
    reason = await pool.fetchval("SELECT cancel_reason FROM bookings WHERE id = $1",
                                 uuid.UUID(booking["id"]))
    assert reason == "event_cancelled"


async def test_a_second_cancel_is_a_conflict(api: Api, organizer) -> None:
    event = await api.create_event(organizer)
    await expect(await api.post(f"/api/v1/events/{event['id']}/cancel", organizer), 200)
    answer = await api.post(f"/api/v1/events/{event['id']}/cancel", organizer)
    await assert_problem(answer, 409, "event_cancelled")


async def test_an_event_that_has_ended_cannot_be_cancelled(
    api: Api, organizer, customer, pool
) -> None:
    event = await api.create_event(organizer, capacity=10)
    booking = await expect(await api.book(customer, event, quantity=2), 201)
    await move_event(pool, event, starts="-3 hours", ends="-1 hour")
    answer = await api.post(f"/api/v1/events/{event['id']}/cancel", organizer)
    await assert_problem(answer, 409, "event_ended")
    assert (await api.get_event(event))["status"] == "scheduled"
    seen = await expect(await api.get(f"/api/v1/bookings/{booking['id']}", customer), 200)
    assert seen["status"] == "confirmed"
    assert await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE kind = 'event_cancelled'"
    ) == 0


async def test_another_organizer_cannot_cancel_an_event(api: Api, organizer) -> None:
    event = await api.create_event(organizer)
    other = await api.register(role="organizer")
    answer = await api.post(f"/api/v1/events/{event['id']}/cancel", other)
    await assert_problem(answer, 403, "not_event_owner")
    assert (await api.get_event(event))["status"] == "scheduled"


# -- attendees -------------------------------------------------------------------------


async def test_the_organizer_lists_confirmed_attendees(api: Api, organizer, pool) -> None:
    event = await api.create_event(organizer)
    ada, bob = await api.seed_users(pool, 2)
    kept = await expect(await api.book(ada, event, quantity=2), 201)
    dropped = await expect(await api.book(bob, event, quantity=1), 201)
    await expect(await api.post(f"/api/v1/bookings/{dropped['id']}/cancel", bob), 200)
    body = await expect(await api.get(f"/api/v1/events/{event['id']}/attendees", organizer), 200)
    assert body["next_cursor"] is None
    [attendee] = body["items"]
    assert attendee["booking_id"] == kept["id"]
    assert attendee["user_id"] == ada.id
    assert attendee["email"] == ada.email
    assert attendee["quantity"] == 2
    assert set(attendee) == {"booking_id", "user_id", "name", "email", "quantity", "booked_at",
                             "items"}
    assert [item["name"] for item in attendee["items"]] == ["General admission"]


async def test_attendees_come_in_pages(api: Api, organizer, pool) -> None:
    event = await api.create_event(organizer)
    customers = await api.seed_users(pool, 7)
    for customer in customers:
        await expect(await api.book(customer, event), 201)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = await expect(
            await api.get(f"/api/v1/events/{event['id']}/attendees", organizer, params=params),
            200,
        )
        seen += [item["user_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [customer.id for customer in customers]


async def test_another_organizer_cannot_list_attendees(api: Api, organizer) -> None:
    event = await api.create_event(organizer)
    other = await api.register(role="organizer")
    answer = await api.get(f"/api/v1/events/{event['id']}/attendees", other)
    await assert_problem(answer, 403, "not_event_owner")


async def test_a_customer_cannot_list_attendees(api: Api, organizer, customer) -> None:
    event = await api.create_event(organizer)
    answer = await api.get(f"/api/v1/events/{event['id']}/attendees", customer)
    await assert_problem(answer, 403, "forbidden_role")


# -- browse ----------------------------------------------------------------------------


async def test_browse_lists_scheduled_events_soonest_first(api: Api, organizer) -> None:
    await api.create_event(organizer, title="Later", starts_at=at(2))
    await api.create_event(organizer, title="Sooner", starts_at=at(1))
    gone = await api.create_event(organizer, title="Cancelled", starts_at=at(0))
    await expect(await api.post(f"/api/v1/events/{gone['id']}/cancel", organizer), 200)
    body = await expect(await api.get("/api/v1/events"), 200)
    assert [event["title"] for event in body["items"]] == ["Sooner", "Later"]
    assert body["next_cursor"] is None


async def test_browse_leaves_out_started_events_unless_asked(
    api: Api, organizer, pool
) -> None:
    started = await api.create_event(organizer, title="Started")
    await api.create_event(organizer, title="Upcoming")
    await pool.execute(
        "UPDATE events SET starts_at = now() - interval '1 hour' WHERE id = $1",
        uuid.UUID(started["id"]),
    )
    assert await titles(api) == ["Upcoming"]
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
    assert await titles(api, starts_after=yesterday) == ["Started", "Upcoming"]


async def test_browse_by_time_window(api: Api, organizer) -> None:
    for hour in range(5):
        await api.create_event(organizer, title=f"E{hour}", starts_at=at(hour))
    assert await titles(api, starts_after=at(0), starts_before=at(4)) == ["E1", "E2", "E3"]


async def test_browse_by_organizer(api: Api, organizer) -> None:
    other = await api.register(role="organizer")
    await api.create_event(organizer, title="Mine")
    await api.create_event(other, title="Theirs")
    assert await titles(api, organizer_id=other.id) == ["Theirs"]


async def test_browse_only_events_with_tickets_left(api: Api, organizer, customer) -> None:
    full = await api.create_event(organizer, title="Full", capacity=2, starts_at=at(1))
    await api.create_event(organizer, title="Open", capacity=2, starts_at=at(2))
    await expect(await api.book(customer, full, quantity=2), 201)
    assert await titles(api, available="true") == ["Open"]
    assert await titles(api, available="false") == ["Full", "Open"]


async def test_search_matches_word_prefixes_in_any_letter_case(api: Api, organizer) -> None:
    await api.create_event(organizer, title="Rock Festival", starts_at=at(1))
    await api.create_event(
        organizer, title="Evening", description="Jazz and ROCKABILLY", starts_at=at(2)
    )
    await api.create_event(organizer, title="Chess", description="quiet", starts_at=at(3))
    assert await titles(api, q="rock") == ["Rock Festival", "Evening"]
    assert await titles(api, q="FEST") == ["Rock Festival"]
    assert await titles(api, q="jazz rock") == ["Evening"]
    assert await titles(api, q="estival") == []


async def test_search_operators_are_only_words(api: Api, organizer) -> None:
    await api.create_event(organizer, title="Rock night")
    assert await titles(api, q="rock:* | !(night') & <->") == ["Rock night"]
    assert await titles(api, q="rock' | 'xyz") == []


async def test_search_without_a_word_is_refused(api: Api) -> None:
    problem = await assert_problem(
        await api.get("/api/v1/events", params={"q": "&|!:*"}), 422, "validation_failed"
    )
    assert set(problem["errors"]) == {"q"}


@pytest.mark.parametrize(
    ("q", "message"),
    [
        ("a b c d e f 1 2", "at most 4 words; this has 8"),
        ("rock jazz folk soul blues", "at most 4 words; this has 5"),
        ("rock n roll", "at least 2 letters or digits; 'n' has fewer"),
        ("x", "at least 2 letters or digits; 'x' has fewer"),
    ],
)
async def test_a_search_of_too_many_or_too_short_words_is_refused(
    api: Api, q: str, message: str
) -> None:
    problem = await assert_problem(
        await api.get("/api/v1/events", params={"q": q}), 422, "validation_failed"
    )
    assert message in problem["errors"]["q"][0]


async def seed_events(pool, count: int, description: str) -> None:
    """`count` scheduled events written straight to the database."""
    [organizer] = await insert_users(pool, 1, role="organizer")
    await pool.execute(
        "INSERT INTO events (organizer_id, title, description, starts_at, capacity,"
        " available_tickets)"
        " SELECT $1, 'Event ' || n, $2, now() + n * interval '1 minute', 10, 10"
        " FROM generate_series(1, $3) AS n",
        organizer, description, count,
    )


async def test_a_search_past_the_search_timeout_is_stopped_as_too_broad(
    make_api: Callable[..., Awaitable[Api]], pool
) -> None:
    await seed_events(pool, 20_000, "music and dance all night")
    api = await make_api(search_timeout_ms=5)
    answer = await api.get("/api/v1/events", params={"q": "mu"})
    problem = await assert_problem(answer, 422, "search_too_broad")
    assert "longer words" in problem["errors"]["q"][0]
    # Browsing without words does not search, and is not stopped.
    assert len((await expect(await api.get("/api/v1/events"), 200))["items"]) == 20


async def test_searches_wait_for_a_free_search_connection_then_are_told_to_retry(
    make_api: Callable[..., Awaitable[Api]],
) -> None:
    api = await make_api(search_concurrency=1, search_timeout_ms=200)
    organizer = await api.register(role="organizer")
    await api.create_event(organizer, title="Rock night")
    held = await api.app[SEARCH_POOL].acquire()
    try:
        answer = await api.get("/api/v1/events", params={"q": "rock"})
        await assert_problem(answer, 503, "search_busy")
        assert answer.headers["Retry-After"] == "1"
        assert (await api.get("/api/v1/events")).status == 200
    finally:
        await api.app[SEARCH_POOL].release(held)
    assert await titles(api, q="rock") == ["Rock night"]


async def statuses(api: Api, paths: list[str], user: User | None = None) -> list[int]:
    """The statuses of GETs of `paths`, sent all at once."""
    answers = await asyncio.gather(*(api.get(path, user) for path in paths))
    return [answer.status for answer in answers]


async def test_anonymous_reads_of_events_are_limited_per_address(
    make_api: Callable[..., Awaitable[Api]],
) -> None:
    api = await make_api(browse_rate=3)
    organizer = await api.register(role="organizer")
    event = await api.create_event(organizer)
    # Twelve at once: however they fall across the 1 s windows, at most 6 are served.
    paths = ["/api/v1/events", f"/api/v1/events/{event['id']}", "/api/v1/events?q=concert"] * 4
    seen = await statuses(api, paths)
    assert 3 <= seen.count(200) <= 6 and seen.count(429) == 12 - seen.count(200), seen
    refused = await api.get("/api/v1/events")
    problem = await assert_problem(refused, 429, "too_many_requests")
    assert int(refused.headers["Retry-After"]) >= 1
    assert "wait a second" in problem["detail"]
    # A token that is not valid does not make a request anyone else's.
    forged = await api.get("/api/v1/events", headers={"Authorization": "Bearer forged"})
    await assert_problem(forged, 429, "too_many_requests")
    # A signed-in user's reads count against that user, not the address.
    assert (await api.get("/api/v1/events", organizer)).status == 200


async def test_signed_in_reads_of_events_are_limited_per_user(
    make_api: Callable[..., Awaitable[Api]],
) -> None:
    api = await make_api(browse_rate=3)
    customer, other = await api.register(), await api.register()
    seen = await statuses(api, ["/api/v1/events"] * 12, customer)
    assert 3 <= seen.count(200) <= 6 and seen.count(429) == 12 - seen.count(200), seen
    assert (await api.get("/api/v1/events", other)).status == 200


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "ten"},
        {"cursor": "not a cursor"},
        {"cursor": "WzEsMl0"},  # a well-formed cursor of the wrong shape: [1,2]
        {"starts_after": "2099-01-01T00:00:00"},
        {"organizer_id": "nope"},
        {"available": "maybe"},
        {"sort": "title"},
    ],
)
async def test_a_bad_browse_parameter_is_refused(api: Api, params) -> None:
    answer = await api.get("/api/v1/events", params=params)
    problem = await assert_problem(answer, 422, "validation_failed")
    assert set(problem["errors"]) == set(params)


async def test_pages_hold_every_event_once_while_events_are_added(api: Api, organizer) -> None:
    # Pairs of events share a start time, so the id breaks ties across page ends.
    original = {
        (await api.create_event(organizer, title=f"E{i}", starts_at=at(i // 2)))["id"]
        for i in range(14)
    }
    seen: list[dict] = []
    cursor = None
    for round_ in range(100):
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = await expect(await api.get("/api/v1/events", params=params), 200)
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        # One event before the position reached, one tying with it, one far after.
        await api.create_event(organizer, title=f"early{round_}", starts_at=at(-1))
        await api.create_event(organizer, title=f"tie{round_}", starts_at=seen[-1]["starts_at"])
        await api.create_event(organizer, title=f"late{round_}", starts_at=at(100 + round_))
    ids = [event["id"] for event in seen]
    assert len(ids) == len(set(ids)), "an event came twice"
    assert original <= set(ids), "an event went missing"
    keys = [(event["starts_at"], event["id"]) for event in seen]
    assert keys == sorted(keys)
    assert sum(event["title"].startswith("late") for event in seen) >= 1


# -- the outbox ------------------------------------------------------------------------


async def outbox(pool, kind: str) -> list:
    return await pool.fetch(
        "SELECT topic, payload, request_id FROM outbox WHERE kind = $1 ORDER BY id", kind
    )


async def test_a_change_of_title_writes_one_notification(api: Api, organizer, pool) -> None:
    event = await api.create_event(organizer)
    answer = await api.patch(
        f"/api/v1/events/{event['id']}", organizer, json={"title": "New"},
        headers={"X-Request-ID": "patch-1"},
    )
    changed = await expect(answer, 200)
    rows = await outbox(pool, "event_updated")
    assert [(row["topic"], row["request_id"]) for row in rows] == [("notifications", "patch-1")]
    assert rows[0]["payload"] == {"event_id": event["id"], "version": changed["version"]}


@pytest.mark.parametrize(
    "change", [{"capacity": 50}, {"description": "More words"}, {"max_tickets_per_booking": 2}]
)
async def test_a_change_attendees_need_not_hear_of_writes_nothing(
    api: Api, organizer, pool, change
) -> None:
    event = await api.create_event(organizer)
    await expect(await api.patch(f"/api/v1/events/{event['id']}", organizer, json=change), 200)
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_cancelling_an_event_writes_one_notification(api: Api, organizer, pool) -> None:
    event = await api.create_event(organizer)
    await expect(await api.post(f"/api/v1/events/{event['id']}/cancel", organizer), 200)
    rows = await outbox(pool, "event_cancelled")
    assert [row["topic"] for row in rows] == ["notifications"]
    assert rows[0]["payload"] == {"event_id": event["id"], "version": 2}
