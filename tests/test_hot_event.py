"""One hot event through real HTTP: concurrent bookings coalesced into batch calls, and
every request still answered on its own (201, 409 sold_out, replay, 422, 401)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

from eventbook.keys import BOOKING_BATCHER
from tests.client import Api, expect
from tests.seed import ledger


async def test_400_simultaneous_bookings_of_one_event_sell_exactly_the_capacity(
    api: Api, organizer, pool
) -> None:
    event = await api.create_event(organizer, capacity=300)
    customers = await api.seed_users(pool, 400)
    answers = await asyncio.gather(*(api.book(customer, event) for customer in customers))
    bodies = [await answer.json() for answer in answers]
    created = [b for a, b in zip(answers, bodies, strict=True) if a.status == 201]
    refused = [b for a, b in zip(answers, bodies, strict=True) if a.status != 201]
    assert len(created) == 300
    assert {(b["code"], b["available_tickets"]) for b in refused} == {("sold_out", 0)}
    assert len({b["id"] for b in created}) == 300
    owners = {customer.id for customer in customers}
    assert {b["user_id"] for b in created} <= owners
    assert all(b["event_id"] == event["id"] and b["status"] == "confirmed" for b in created)
    assert await ledger(pool, event) == (300, 0, 300)
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 300
    # Coalesced: far fewer calls than requests.
    assert api.app[BOOKING_BATCHER].calls < 400


async def test_each_201_answers_the_customer_who_asked(api: Api, organizer, pool) -> None:
    event = await api.create_event(organizer, capacity=100)
    customers = await api.seed_users(pool, 50)
    answers = await asyncio.gather(*(api.book(customer, event, quantity=1 + n % 3)
                                     for n, customer in enumerate(customers)))
    for n, (customer, answer) in enumerate(zip(customers, answers, strict=True)):
        body = await expect(answer, 201)
        assert (body["user_id"], body["quantity"]) == (customer.id, 1 + n % 3)
        stored = await pool.fetchrow("SELECT user_id, quantity FROM bookings WHERE id = $1",
                                     uuid.UUID(body["id"]))
        assert (str(stored["user_id"]), stored["quantity"]) == (customer.id, 1 + n % 3)


async def test_one_key_sent_many_times_at_once_makes_one_booking(
    api: Api, organizer, customer, pool
) -> None:
    event = await api.create_event(organizer, capacity=10)
    others = await api.seed_users(pool, 10)
    answers = await asyncio.gather(
        *(api.book(customer, event, quantity=2, key="once") for _ in range(6)),
        *(api.book(other, event, quantity=1) for other in others[:4]),
        api.book(customer, event, quantity=3, key="once"),
    )
    mine, theirs, other_body = answers[:6], answers[6:10], answers[10]
    assert sorted(answer.status for answer in mine) == [200] * 5 + [201]
    assert len({(await answer.json())["id"] for answer in mine}) == 1
    assert [answer.status for answer in theirs] == [201] * 4
    assert other_body.status == 422
    assert (await other_body.json())["code"] == "idempotency_key_reused"
    assert await ledger(pool, event) == (10, 4, 6)


async def test_a_key_from_an_earlier_batch_is_replayed(api: Api, organizer, customer) -> None:
    event = await api.create_event(organizer, capacity=10)
    first = await expect(await api.book(customer, event, quantity=2, key="k"), 201)
    again = await expect(await api.book(customer, event, quantity=2, key="k"), 200)
    assert again == first
    reused = await expect(await api.book(customer, event, quantity=1, key="k"), 422)
    assert reused["code"] == "idempotency_key_reused"
    assert (await api.get_event(event))["available_tickets"] == 8


async def test_a_booking_that_breaks_its_batch_fails_alone(api: Api, organizer, pool) -> None:
    event = await api.create_event(organizer, capacity=10)
    customers = await api.seed_users(pool, 6)
    gone = customers[3]
    await pool.execute("DELETE FROM users WHERE id = $1", uuid.UUID(gone.id))
    answers = await asyncio.gather(*(api.book(customer, event) for customer in customers))
    statuses = [answer.status for answer in answers]
    assert statuses == [201, 201, 201, 401, 201, 201]
    assert (await answers[3].json())["code"] == "invalid_token"
    assert await ledger(pool, event) == (10, 5, 5)


async def test_tickets_add_up_after_bookings_race_cancels_on_one_event(
    api: Api, organizer, pool
) -> None:
    event = await api.create_event(organizer, capacity=40)
    customers = await api.seed_users(pool, 80)
    early = [await expect(await api.book(c, event, quantity=2), 201) for c in customers[:10]]
    answers = await asyncio.gather(
        *(api.book(c, event, quantity=1) for c in customers[10:]),
        *(api.post(f"/api/v1/bookings/{b['id']}/cancel", c)
          for b, c in zip(early, customers[:10], strict=True)),
    )
    statuses = Counter(answer.status for answer in answers)
    assert set(statuses) <= {200, 201, 409}
    capacity, available, held = await ledger(pool, event)
    assert available == capacity - held
    assert 0 <= available <= capacity
