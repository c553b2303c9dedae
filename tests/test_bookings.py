"""Bookings: book, replay with an Idempotency-Key, list, read, cancel; who sees what."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.assertions import assert_problem
from tests.client import Api, expect
from tests.seed import ledger, move_event

BOOKING_KEYS = {
    "id", "event_id", "user_id", "quantity", "status", "confirmation_status", "confirmed_at",
    "created_at", "items", "total_cents", "currency", "payment_reference", "hold_id",
}


# -- book ------------------------------------------------------------------------------


async def test_a_customer_books_tickets(api: Api, organizer, customer) -> None:
    event = await api.create_event(organizer, capacity=10)
    booking = await expect(await api.book(customer, event, quantity=3), 201)
    assert set(booking) == BOOKING_KEYS
    assert booking["event_id"] == event["id"]
    assert booking["user_id"] == customer.id
    assert booking["quantity"] == 3
    assert booking["status"] == "confirmed"
    assert booking["confirmation_status"] == "pending"
    assert booking["confirmed_at"] is None
    assert "+00:00" in booking["created_at"]
    [item] = booking["items"]
    assert (item["name"], item["quantity"], item["price_cents"]) == ("General admission", 3, 0)
    assert (booking["total_cents"], booking["currency"]) == (0, "EUR")
    assert (await api.get_event(event))["available_tickets"] == 7


async def test_one_ticket_when_no_quantity_is_given(api: Api, organizer, customer) -> None:
    event = await api.create_event(organizer)
    booking = await expect(await api.book(customer, event, quantity=None), 201)
    assert booking["quantity"] == 1


@pytest.mark.parametrize("quantity", [0, -1, 101, "2", 1.5, True, None])
async def test_an_invalid_quantity_is_refused(api: Api, organizer, customer, quantity) -> None:
    event = await api.create_event(organizer)
    answer = await api.post(
        f"/api/v1/events/{event['id']}/bookings", customer, json={"quantity": quantity}
    )
    problem = await assert_problem(answer, 422, "validation_failed")
    assert set(problem["errors"]) == {"quantity"}


async def test_more_than_the_events_per_booking_limit_is_refused(
    api: Api, organizer, customer
) -> None:
    event = await api.create_event(organizer, max_tickets_per_booking=4)
    problem = await assert_problem(await api.book(customer, event, quantity=5), 422,
                                   "validation_failed")
    assert set(problem["errors"]) == {"quantity"}
    assert (await api.get_event(event))["available_tickets"] == event["capacity"]


async def test_an_unknown_field_in_a_booking_is_refused(api: Api, organizer, customer) -> None:
    event = await api.create_event(organizer)
    answer = await api.post(
        f"/api/v1/events/{event['id']}/bookings", customer, json={"quantity": 1, "price": 0}
    )
    await assert_problem(answer, 422, "validation_failed")


async def test_an_organizer_cannot_book(api: Api, organizer) -> None:
    event = await api.create_event(organizer)
    await assert_problem(await api.book(organizer, event), 403, "forbidden_role")


async def test_booking_needs_a_token(api: Api, organizer) -> None:
    event = await api.create_event(organizer)
    answer = await api.post(f"/api/v1/events/{event['id']}/bookings", json={})
    await assert_problem(answer, 401, "unauthorized")


async def test_booking_an_unknown_event_is_a_404(api: Api, customer) -> None:
    answer = await api.book(customer, {"id": str(uuid.uuid4())})
    await assert_problem(answer, 404, "event_not_found")


async def test_booking_a_malformed_event_id_is_a_404(api: Api, customer) -> None:
    await assert_problem(await api.book(customer, {"id": "1234"}), 404, "event_not_found")


async def test_a_sold_out_event_refuses_the_next_booking(api: Api, organizer, customer) -> None:
    event = await api.create_event(organizer, capacity=1)
    await expect(await api.book(customer, event, quantity=1), 201)
    problem = await assert_problem(await api.book(customer, event, quantity=1), 409, "sold_out")
    assert problem["available_tickets"] == 0


async def test_sold_out_says_how_many_tickets_are_left(api: Api, organizer, customer) -> None:
    event = await api.create_event(organizer, capacity=5)
    await expect(await api.book(customer, event, quantity=3), 201)
    problem = await assert_problem(await api.book(customer, event, quantity=3), 409, "sold_out")
    assert problem["available_tickets"] == 2
    assert (await api.get_event(event))["available_tickets"] == 2


async def test_a_cancelled_event_is_not_bookable(api: Api, organizer, customer) -> None:
    event = await api.create_event(organizer)
    await expect(await api.post(f"/api/v1/events/{event['id']}/cancel", organizer), 200)
    await assert_problem(await api.book(customer, event), 409, "event_not_bookable")


async def test_a_started_event_is_not_bookable(api: Api, organizer, customer, pool) -> None:
    event = await api.create_event(organizer)
    await pool.execute(
        "UPDATE events SET starts_at = now() - interval '1 minute' WHERE id = $1",
        uuid.UUID(event["id"]),
    )
    await assert_problem(await api.book(customer, event), 409, "event_not_bookable")


async def test_a_customer_stops_at_the_events_per_customer_cap(
    api: Api, organizer, customer
) -> None:
    event = await api.create_event(
        organizer, capacity=100, max_tickets_per_customer=5, max_tickets_per_booking=2
    )
    for _ in range(2):
        await expect(await api.book(customer, event, quantity=2), 201)
    problem = await assert_problem(
        await api.book(customer, event, quantity=2), 409, "customer_limit_reached"
    )
    assert problem["customer_tickets_left"] == 1
    assert "1 more ticket " in problem["detail"]
    await expect(await api.book(customer, event, quantity=1), 201)
    problem = await assert_problem(
        await api.book(customer, event, quantity=1), 409, "customer_limit_reached"
    )
    assert problem["customer_tickets_left"] == 0
    assert (await api.get_event(event))["available_tickets"] == 95
    other = await api.register()
    await expect(await api.book(other, event, quantity=2), 201)


async def test_cancelled_bookings_do_not_count_toward_the_cap(
    api: Api, organizer, customer
) -> None:
    event = await api.create_event(organizer, max_tickets_per_customer=2)
    booking = await expect(await api.book(customer, event, quantity=2), 201)
    await assert_problem(await api.book(customer, event), 409, "customer_limit_reached")
    await expect(await api.post(f"/api/v1/bookings/{booking['id']}/cancel", customer), 200)
    await expect(await api.book(customer, event, quantity=2), 201)


async def test_a_retry_at_the_cap_still_answers_its_booking(
    api: Api, organizer, customer
) -> None:
    event = await api.create_event(organizer, max_tickets_per_customer=2)
    booking = await expect(await api.book(customer, event, quantity=2, key="k-1"), 201)
    assert await expect(await api.book(customer, event, quantity=2, key="k-1"), 200) == booking


async def test_lifting_the_cap_lets_the_customer_book_again(
    api: Api, organizer, customer
) -> None:
    event = await api.create_event(organizer, max_tickets_per_customer=1)
    await expect(await api.book(customer, event), 201)
    await assert_problem(await api.book(customer, event), 409, "customer_limit_reached")
    path = f"/api/v1/events/{event['id']}"
    await expect(await api.patch(path, organizer, json={"max_tickets_per_customer": None}), 200)
    await expect(await api.book(customer, event), 201)


async def test_bookings_per_customer_are_rate_limited(make_api, pool) -> None:
    api = await make_api(booking_rate=2)
    customer, other = await api.seed_users(pool, 2)
    [organizer] = await api.seed_users(pool, 1, role="organizer")
    event = await api.create_event(organizer)
    assert [(await api.book(customer, event)).status for _ in range(2)] == [201, 201]
    answer = await api.book(customer, event)
    await assert_problem(answer, 429, "too_many_requests")
    assert int(answer.headers["Retry-After"]) >= 1
    assert (await api.book(other, event)).status == 201


# -- Idempotency-Key -------------------------------------------------------------------


async def test_a_retry_with_the_same_key_returns_the_same_booking(
    api: Api, organizer, customer
) -> None:
    event = await api.create_event(organizer, capacity=10)
    first = await expect(await api.book(customer, event, quantity=2, key="order-1"), 201)
    again = await expect(await api.book(customer, event, quantity=2, key="order-1"), 200)
    assert again == first
    assert (await api.get_event(event))["available_tickets"] == 8


async def test_the_same_key_with_another_quantity_is_refused(
    api: Api, organizer, customer
) -> None:
    event = await api.create_event(organizer, capacity=10)
    await expect(await api.book(customer, event, quantity=2, key="order-1"), 201)
    answer = await api.book(customer, event, quantity=3, key="order-1")
    await assert_problem(answer, 422, "idempotency_key_reused")
    assert (await api.get_event(event))["available_tickets"] == 8


async def test_the_same_key_for_another_event_is_refused(api: Api, organizer, customer) -> None:
    first = await api.create_event(organizer)
    second = await api.create_event(organizer)
    await expect(await api.book(customer, first, key="order-1"), 201)
    await assert_problem(await api.book(customer, second, key="order-1"), 422,
                         "idempotency_key_reused")


async def test_keys_belong_to_one_customer(api: Api, organizer, pool) -> None:
    event = await api.create_event(organizer)
    ada, bob = await api.seed_users(pool, 2)
    first = await expect(await api.book(ada, event, key="k"), 201)
    second = await expect(await api.book(bob, event, key="k"), 201)
    assert first["id"] != second["id"]


async def test_a_replay_answers_even_after_the_event_sold_out(
    api: Api, organizer, customer
) -> None:
    event = await api.create_event(organizer, capacity=2)
    first = await expect(await api.book(customer, event, quantity=2, key="k"), 201)
    assert (await expect(await api.book(customer, event, quantity=2, key="k"), 200)) == first


@pytest.mark.parametrize("key", ["", "k" * 256, "caf\u00e9", "tab\there"])
async def test_a_malformed_idempotency_key_is_refused(
    api: Api, organizer, customer, key
) -> None:
    event = await api.create_event(organizer)
    headers = {"Idempotency-Key": key}
    answer = await api.post(
        f"/api/v1/events/{event['id']}/bookings", customer, json={}, headers=headers
    )
    problem = await assert_problem(answer, 422, "validation_failed")
    assert set(problem["errors"]) == {"Idempotency-Key"}


async def test_two_idempotency_keys_are_a_400_and_book_nothing(
    api: Api, organizer, customer
) -> None:
    event = await api.create_event(organizer)
    for second in ("order-1", "order-2"):
        answer = await api.post(
            f"/api/v1/events/{event['id']}/bookings", customer, json={},
            headers=[("Idempotency-Key", "order-1"), ("Idempotency-Key", second)],
        )
        await assert_problem(answer, 400, "repeated_header")
    assert (await api.get_event(event))["available_tickets"] == event["capacity"]


# -- list and read ---------------------------------------------------------------------


async def test_a_customer_lists_own_bookings_newest_first(
    api: Api, organizer, pool
) -> None:
    event = await api.create_event(organizer)
    ada, bob = await api.seed_users(pool, 2)
    made = [await expect(await api.book(ada, event), 201) for _ in range(5)]
    await expect(await api.book(bob, event), 201)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = await expect(await api.get("/api/v1/bookings", ada, params=params), 200)
        seen += [booking["id"] for booking in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [booking["id"] for booking in reversed(made)]


async def test_an_organizer_has_no_booking_list(api: Api, organizer) -> None:
    await assert_problem(await api.get("/api/v1/bookings", organizer), 403, "forbidden_role")


async def test_a_bad_booking_list_cursor_is_refused(api: Api, customer) -> None:
    answer = await api.get("/api/v1/bookings", customer, params={"cursor": "@@@"})
    await assert_problem(answer, 422, "validation_failed")


async def test_a_customer_reads_own_booking(api: Api, organizer, customer) -> None:
    event = await api.create_event(organizer)
    booking = await expect(await api.book(customer, event), 201)
    assert await expect(await api.get(f"/api/v1/bookings/{booking['id']}", customer), 200) \
        == booking


async def test_the_events_organizer_reads_a_booking(api: Api, organizer, customer) -> None:
    event = await api.create_event(organizer)
    booking = await expect(await api.book(customer, event), 201)
    assert await expect(await api.get(f"/api/v1/bookings/{booking['id']}", organizer), 200) \
        == booking


async def test_another_customer_cannot_see_a_booking(api: Api, organizer, customer) -> None:
    event = await api.create_event(organizer)
    booking = await expect(await api.book(customer, event), 201)
    other = await api.register()
    answer = await api.get(f"/api/v1/bookings/{booking['id']}", other)
    await assert_problem(answer, 404, "booking_not_found")


async def test_another_organizer_cannot_see_a_booking(api: Api, organizer, customer) -> None:
    event = await api.create_event(organizer)
    booking = await expect(await api.book(customer, event), 201)
    other = await api.register(role="organizer")
    answer = await api.get(f"/api/v1/bookings/{booking['id']}", other)
    await assert_problem(answer, 404, "booking_not_found")


@pytest.mark.parametrize("booking_id", [str(uuid.uuid4()), "not-a-uuid"])
async def test_an_unknown_booking_is_a_404(api: Api, customer, booking_id) -> None:
    answer = await api.get(f"/api/v1/bookings/{booking_id}", customer)
    await assert_problem(answer, 404, "booking_not_found")


# -- cancel ----------------------------------------------------------------------------


async def test_cancelling_a_booking_gives_its_tickets_back(
    api: Api, organizer, customer
) -> None:
    event = await api.create_event(organizer, capacity=10)
    booking = await expect(await api.book(customer, event, quantity=4), 201)
    cancelled = await expect(
        await api.post(f"/api/v1/bookings/{booking['id']}/cancel", customer), 200
    )
    assert cancelled["status"] == "cancelled"
    assert cancelled["id"] == booking["id"]
    assert (await api.get_event(event))["available_tickets"] == 10


async def test_a_booking_cannot_be_cancelled_once_its_event_started(
    api: Api, organizer, customer, pool
) -> None:
    event = await api.create_event(organizer, capacity=10)
    booking = await expect(await api.book(customer, event, quantity=4), 201)
    await move_event(pool, event, starts="-1 minute", ends="2 hours")
    answer = await api.post(f"/api/v1/bookings/{booking['id']}/cancel", customer)
    await assert_problem(answer, 409, "event_started")
    seen = await expect(await api.get(f"/api/v1/bookings/{booking['id']}", customer), 200)
    assert seen["status"] == "confirmed"
    assert await ledger(pool, event) == (10, 6, 4)
    assert await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE kind = 'booking_cancelled'"
    ) == 0


async def test_a_cancelled_booking_of_a_started_event_is_still_already_cancelled(
    api: Api, organizer, customer, pool
) -> None:
    event = await api.create_event(organizer, capacity=10)
    booking = await expect(await api.book(customer, event), 201)
    await expect(await api.post(f"/api/v1/bookings/{booking['id']}/cancel", customer), 200)
    await move_event(pool, event, starts="-1 minute")
    answer = await api.post(f"/api/v1/bookings/{booking['id']}/cancel", customer)
    await assert_problem(answer, 409, "booking_already_cancelled")


async def test_cancels_waiting_while_the_event_starts_are_refused(
    api: Api, organizer, pool
) -> None:
    event = await api.create_event(organizer, capacity=200)
    customers = await api.seed_users(pool, 100)
    bookings = [await expect(await api.book(c, event), 201) for c in customers]
    async with pool.acquire() as conn, conn.transaction():
        # The start arrives while every cancel waits for the event's row.
        await move_event(conn, event, starts="-1 second")
        cancels = asyncio.gather(*(
            api.post(f"/api/v1/bookings/{b['id']}/cancel", c)
            for b, c in zip(bookings, customers, strict=True)
        ))
        await asyncio.sleep(0.5)
    answers = await cancels
    assert {answer.status for answer in answers} == {409}
    assert {(await answer.json())["code"] for answer in answers} == {"event_started"}
    assert await ledger(pool, event) == (200, 100, 100)


async def test_a_second_booking_cancel_is_a_conflict(api: Api, organizer, customer) -> None:
    event = await api.create_event(organizer, capacity=10)
    booking = await expect(await api.book(customer, event, quantity=4), 201)
    await expect(await api.post(f"/api/v1/bookings/{booking['id']}/cancel", customer), 200)
    answer = await api.post(f"/api/v1/bookings/{booking['id']}/cancel", customer)
    await assert_problem(answer, 409, "booking_already_cancelled")
    assert (await api.get_event(event))["available_tickets"] == 10


async def test_nobody_else_can_cancel_a_booking(api: Api, organizer, customer) -> None:
    event = await api.create_event(organizer)
    booking = await expect(await api.book(customer, event), 201)
    other = await api.register()
    answer = await api.post(f"/api/v1/bookings/{booking['id']}/cancel", other)
    await assert_problem(answer, 404, "booking_not_found")
    seen = await expect(await api.get(f"/api/v1/bookings/{booking['id']}", customer), 200)
    assert seen["status"] == "confirmed"


async def test_the_organizer_cannot_cancel_a_booking(api: Api, organizer, customer) -> None:
    event = await api.create_event(organizer)
    booking = await expect(await api.book(customer, event), 201)
    answer = await api.post(f"/api/v1/bookings/{booking['id']}/cancel", organizer)
    await assert_problem(answer, 403, "forbidden_role")


@pytest.mark.parametrize("booking_id", [str(uuid.uuid4()), "42"])
async def test_cancelling_an_unknown_booking_is_a_404(api: Api, customer, booking_id) -> None:
    answer = await api.post(f"/api/v1/bookings/{booking_id}/cancel", customer)
    await assert_problem(answer, 404, "booking_not_found")


# -- the outbox ------------------------------------------------------------------------


async def test_a_booking_writes_one_confirmation_with_its_request_id(
    api: Api, organizer, customer, pool
) -> None:
    event = await api.create_event(organizer)
    answer = await api.post(
        f"/api/v1/events/{event['id']}/bookings", customer, json={"quantity": 2},
        headers={"X-Request-ID": "book-42"},
    )
    booking = await expect(answer, 201)
    rows = await pool.fetch("SELECT topic, kind, payload, request_id FROM outbox")
    assert [dict(row) for row in rows] == [{
        "topic": "confirmations", "kind": "booking_confirmed",
        "payload": {"booking_id": booking["id"]}, "request_id": "book-42",
    }]


async def test_a_replayed_or_refused_booking_writes_nothing(
    api: Api, organizer, customer, pool
) -> None:
    event = await api.create_event(organizer, capacity=1)
    await expect(await api.book(customer, event, key="k"), 201)
    await expect(await api.book(customer, event, key="k"), 200)
    await assert_problem(await api.book(customer, event), 409, "sold_out")
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1


async def test_cancelling_a_booking_writes_one_cancellation_mail(
    api: Api, organizer, customer, pool
) -> None:
    event = await api.create_event(organizer)
    booking = await expect(await api.book(customer, event), 201)
    await expect(
        await api.post(f"/api/v1/bookings/{booking['id']}/cancel", customer,
                       headers={"X-Request-ID": "cancel-7"}),
        200,
    )
    rows = await pool.fetch(
        "SELECT topic, payload, request_id FROM outbox WHERE kind = 'booking_cancelled'"
    )
    assert [dict(row) for row in rows] == [{
        "topic": "confirmations", "payload": {"booking_id": booking["id"]},
        "request_id": "cancel-7",
    }]
