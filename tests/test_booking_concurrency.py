"""Concurrency through real HTTP: tickets are never oversold, never lost, never doubled."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from aiohttp import ClientResponse

from eventbook.keys import BOOKING_BATCHER
from tests.client import Api, expect
from tests.seed import ledger


async def test_500_simultaneous_bookings_sell_exactly_the_capacity(
    api: Api, organizer, pool
) -> None:
    event = await api.create_event(organizer, capacity=100)
    customers = await api.seed_users(pool, 500)
    quantities = random.Random(500).choices(range(1, 5), k=len(customers))
    answers = await asyncio.gather(
        *(api.book(customer, event, quantity=q)
          for customer, q in zip(customers, quantities, strict=True))
    )
    sold = 0
    refused = 0
    for answer, quantity in zip(answers, quantities, strict=True):
        body = await answer.json()
        if answer.status == 201:
            assert body["quantity"] == quantity
            sold += quantity
        else:
            assert (answer.status, body["code"]) == (409, "sold_out"), body
            # Tickets only ever go down here, so the count it saw was too small.
            assert body["available_tickets"] < quantity
            refused += 1
    assert sold == 100
    assert refused == 500 - sum(answer.status == 201 for answer in answers)
    assert await ledger(pool, event) == (100, 0, 100)
    confirmations = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE kind = 'booking_confirmed'"
    )
    assert confirmations == sum(answer.status == 201 for answer in answers)


@pytest.mark.parametrize("alone", [False, True], ids=["batched", "one_by_one"])
async def test_one_customer_firing_200_bookings_at_once_stops_at_the_cap(
    api: Api, organizer, pool, alone: bool
) -> None:
    event = await api.create_event(
        organizer, capacity=1000, max_tickets_per_customer=10, max_tickets_per_booking=2
    )
    [customer] = await api.seed_users(pool, 1)
    calls_before = api.app[BOOKING_BATCHER].calls

    def grab() -> asyncio.Future[list[ClientResponse]]:
        # Different keys: each is a booking of its own.
        return asyncio.gather(
            *(api.book(customer, event, quantity=2, key=f"grab-{n}") for n in range(200))
        )

    if alone:
        async with pool.acquire() as conn, conn.transaction():
            # Someone else holds the event's row past the batch's lock_timeout, so the
            # batcher falls back to book_tickets for each request: they race for the row.
            await conn.execute("SELECT 1 FROM events WHERE id = $1::uuid FOR UPDATE", event["id"])
            grabbing = grab()
            await asyncio.sleep(1)
        answers = await grabbing
    else:
        answers = await grab()
        # Many were decided together, in one batch: the cap holds inside a batch.
        assert api.app[BOOKING_BATCHER].calls - calls_before < 100
    outcomes = Counter([(answer.status, (await answer.json()).get("code")) for answer in answers])
    assert outcomes == {(201, None): 5, (409, "customer_limit_reached"): 195}
    assert await ledger(pool, event) == (1000, 990, 10)


async def test_many_customers_at_once_each_stop_at_the_cap(api: Api, organizer, pool) -> None:
    event = await api.create_event(organizer, capacity=1000, max_tickets_per_customer=7)
    customers = await api.seed_users(pool, 20)
    requests = [customer for customer in customers for _ in range(30)]
    random.Random(20).shuffle(requests)
    answers = await asyncio.gather(*(api.book(customer, event) for customer in requests))
    assert {answer.status for answer in answers} == {201, 409}
    held = await pool.fetch(
        "SELECT user_id::text AS user_id, sum(quantity) AS held FROM bookings"
        " WHERE event_id = $1::uuid AND status = 'confirmed' GROUP BY user_id",
        event["id"],
    )
    assert {row["user_id"]: row["held"] for row in held} == {c.id: 7 for c in customers}
    assert await ledger(pool, event) == (1000, 1000 - 20 * 7, 20 * 7)


async def test_capped_customers_racing_for_a_small_event_respect_both_limits(
    api: Api, organizer, pool
) -> None:
    event = await api.create_event(
        organizer, capacity=50, max_tickets_per_customer=8, max_tickets_per_booking=3
    )
    customers = await api.seed_users(pool, 12)
    rng = random.Random(12)
    requests = [(c, rng.randint(1, 3)) for c in customers for _ in range(15)]
    rng.shuffle(requests)
    answers = await asyncio.gather(*(api.book(c, event, quantity=q) for c, q in requests))
    codes = {(answer.status, (await answer.json()).get("code")) for answer in answers}
    assert codes <= {(201, None), (409, "sold_out"), (409, "customer_limit_reached")}
    held = await pool.fetchval(
        "SELECT max(held) FROM (SELECT sum(quantity) AS held FROM bookings"
        " WHERE event_id = $1::uuid AND status = 'confirmed' GROUP BY user_id) h",
        event["id"],
    )
    assert held <= 8
    assert await ledger(pool, event) == (50, 0, 50)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_tickets_add_up_after_a_random_mix_of_changes(
    api: Api, organizer, pool, seed: int
) -> None:
    rng = random.Random(seed)
    event = await api.create_event(organizer, capacity=60)
    customers = await api.seed_users(pool, 40)
    earlier = []
    owner = {}
    for customer in customers[:20]:
        booking = await expect(await api.book(customer, event, quantity=rng.randint(1, 2)), 201)
        earlier.append(booking)
        owner[booking["id"]] = customer

    operations = []
    for _ in range(300):
        roll = rng.random()
        if roll < 0.6:
            customer = rng.choice(customers)
            operations.append(("book", api.book(customer, event, quantity=rng.randint(1, 4))))
        elif roll < 0.85:
            booking = rng.choice(earlier)
            path = f"/api/v1/bookings/{booking['id']}/cancel"
            operations.append(("cancel", api.post(path, owner[booking["id"]])))
        else:
            change = {"capacity": rng.randint(20, 120)}
            path = f"/api/v1/events/{event['id']}"
            operations.append(("resize", api.patch(path, organizer, json=change)))
    answers = await asyncio.gather(*(call for _, call in operations))

    outcomes: Counter[tuple[str, int, str | None]] = Counter()
    for (kind, _), answer in zip(operations, answers, strict=True):
        body = await answer.json()
        outcomes[(kind, answer.status, body.get("code"))] += 1
    allowed = {
        ("book", 201, None), ("book", 409, "sold_out"),
        ("cancel", 200, None), ("cancel", 409, "booking_already_cancelled"),
        ("resize", 200, None), ("resize", 409, "capacity_below_sold"),
    }
    assert set(outcomes) <= allowed, outcomes

    capacity, available, held = await ledger(pool, event)
    assert available == capacity - held
    assert 0 <= available <= capacity
    resized = outcomes[("resize", 200, None)]
    assert (await api.get_event(event))["version"] == 1 + resized
    counts = await pool.fetchrow(
        "SELECT count(*) FILTER (WHERE kind = 'booking_confirmed') AS confirmed,"
        " count(*) FILTER (WHERE kind = 'booking_cancelled') AS cancelled FROM outbox"
    )
    assert counts["confirmed"] == len(earlier) + outcomes[("book", 201, None)]
    assert counts["cancelled"] == outcomes[("cancel", 200, None)]


async def test_ten_concurrent_retries_with_one_key_make_one_booking(
    api: Api, organizer, customer, pool
) -> None:
    event = await api.create_event(organizer, capacity=10)
    answers = await asyncio.gather(
        *(api.book(customer, event, quantity=3, key="checkout-1") for _ in range(10))
    )
    assert sorted(answer.status for answer in answers) == [200] * 9 + [201]
    assert len({(await answer.json())["id"] for answer in answers}) == 1
    assert await pool.fetchval("SELECT count(*) FROM bookings") == 1
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1
    assert (await api.get_event(event))["available_tickets"] == 7


async def test_concurrent_requests_with_one_key_and_two_bodies_make_one_booking(
    api: Api, organizer, customer, pool
) -> None:
    event = await api.create_event(organizer, capacity=10)
    quantities = [1, 2] * 5
    answers = await asyncio.gather(
        *(api.book(customer, event, quantity=q, key="checkout-1") for q in quantities)
    )
    [booking] = await pool.fetch("SELECT quantity FROM bookings")
    for answer, quantity in zip(answers, quantities, strict=True):
        if quantity == booking["quantity"]:
            assert answer.status in (200, 201)
        else:
            assert answer.status == 422
            assert (await answer.json())["code"] == "idempotency_key_reused"
    assert sum(answer.status == 201 for answer in answers) == 1
    assert (await api.get_event(event))["available_tickets"] == 10 - booking["quantity"]


async def test_concurrent_cancels_of_one_booking_give_its_tickets_back_once(
    api: Api, organizer, customer, pool
) -> None:
    event = await api.create_event(organizer, capacity=10)
    booking = await expect(await api.book(customer, event, quantity=4), 201)
    answers = await asyncio.gather(
        *(api.post(f"/api/v1/bookings/{booking['id']}/cancel", customer) for _ in range(10))
    )
    assert sorted(answer.status for answer in answers) == [200] + [409] * 9
    assert await ledger(pool, event) == (10, 10, 0)


async def test_bookings_racing_an_event_cancel_all_end_cancelled(
    api: Api, organizer, pool
) -> None:
    event = await api.create_event(organizer, capacity=100)
    customers = await api.seed_users(pool, 50)
    cancel = api.post(f"/api/v1/events/{event['id']}/cancel", organizer)
    answers = await asyncio.gather(
        *(api.book(customer, event) for customer in customers[:25]),
        cancel,
        *(api.book(customer, event) for customer in customers[25:]),
    )
    statuses = Counter(answer.status for answer in answers)
    assert set(statuses) <= {200, 201, 409}
    assert await ledger(pool, event) == (100, 100, 0)
    assert (await api.get_event(event))["status"] == "cancelled"
