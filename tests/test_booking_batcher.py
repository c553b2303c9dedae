"""The booking batcher against real PostgreSQL: bookings of one event coalesced into
book_tickets calls, each request still decided on its own and in arrival order."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import random
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from eventbook.booking_batcher import Booked, BookingBatcher, BookingRequest, Confirmation
from tests.seed import insert_event, insert_users, ledger


def request(user: uuid.UUID, event: uuid.UUID, quantity: int = 1, key: str | None = None,
            request_id: str | None = None) -> BookingRequest:
    # The handler's fingerprint: event and quantity.
    fingerprint = hashlib.sha256(f"{event}:{quantity}".encode()).hexdigest()
    return BookingRequest(
        user, ((None, quantity),), key, fingerprint, request_id or uuid.uuid4().hex
    )


@pytest.fixture
async def batcher(pool: asyncpg.Pool) -> AsyncIterator[BookingBatcher]:
    batcher = BookingBatcher(pool)
    yield batcher
    await batcher.close()


@pytest.fixture
async def organizer(pool: asyncpg.Pool) -> uuid.UUID:
    [organizer] = await insert_users(pool, 1, "organizer")
    return organizer


async def book_together(batcher: BookingBatcher, event: uuid.UUID,
                        requests: list[BookingRequest]) -> list[Booked | BaseException]:
    return await asyncio.gather(
        *(batcher.book(event, r) for r in requests), return_exceptions=True
    )


async def test_requests_arriving_together_are_decided_in_one_call_in_arrival_order(
    batcher: BookingBatcher, pool, organizer
) -> None:
    event = await insert_event(pool, organizer, capacity=3)
    users = await insert_users(pool, 4)
    answers = await book_together(
        batcher, event, [request(u, event, q) for u, q in zip(users, [2, 2, 1, 1], strict=True)]
    )
    assert batcher.calls == 1
    assert [(a.outcome, a.available) for a in answers] == [
        ("created", 1), ("sold_out", 1), ("created", 0), ("sold_out", 0)
    ]
    assert answers[0].booking["user_id"] == users[0]
    assert answers[0].booking["quantity"] == 2
    assert answers[0].booking["status"] == "confirmed"
    assert answers[0].booking["confirmation_status"] == "pending"
    assert answers[1].booking is None
    assert await ledger(pool, event) == (3, 0, 3)


async def test_300_simultaneous_bookings_sell_exactly_the_capacity(
    batcher: BookingBatcher, pool, organizer
) -> None:
    event = await insert_event(pool, organizer, capacity=250)
    users = await insert_users(pool, 300)
    quantities = random.Random(7).choices(range(1, 4), k=len(users))
    requests = [request(u, event, q) for u, q in zip(users, quantities, strict=True)]
    # Three waves a little apart: later requests queue behind a call in flight.
    answers: list[Booked] = []
    waves = [asyncio.create_task(book_together(batcher, event, requests[i::3]))
             for i in range(3)]
    for wave in waves:
        answers.extend(await wave)
    sold = sum(a.booking["quantity"] for a in answers if a.outcome == "created")
    assert {a.outcome for a in answers} == {"created", "sold_out"}
    for answer in answers:
        if answer.outcome == "sold_out":
            assert answer.booking is None
    assert sold == 250
    assert await ledger(pool, event) == (250, 0, 250)
    assert batcher.calls < len(requests)
    made = sum(a.outcome == "created" for a in answers)
    assert await pool.fetchval("SELECT count(*) FROM bookings") == made


async def test_each_booking_gets_its_own_outbox_row_with_its_request_id(
    batcher: BookingBatcher, pool, organizer
) -> None:
    event = await insert_event(pool, organizer, capacity=10)
    users = await insert_users(pool, 5)
    requests = [request(u, event, request_id=f"req-{n}") for n, u in enumerate(users)]
    answers = await book_together(batcher, event, requests)
    rows = await pool.fetch("SELECT kind, payload, request_id FROM outbox ORDER BY id")
    assert [(r["kind"], r["request_id"], r["payload"]["booking_id"]) for r in rows] == [
        ("booking_confirmed", f"req-{n}", str(a.booking["id"])) for n, a in enumerate(answers)
    ]


async def test_one_key_twice_in_one_batch_makes_one_booking_and_a_replay(
    batcher: BookingBatcher, pool, organizer
) -> None:
    event = await insert_event(pool, organizer, capacity=10)
    [user] = await insert_users(pool, 1)
    first, again, other_body = await book_together(batcher, event, [
        request(user, event, 2, key="k1"), request(user, event, 2, key="k1"),
        request(user, event, 3, key="k1"),
    ])
    assert batcher.calls == 1
    assert (first.outcome, again.outcome, other_body.outcome) == (
        "created", "replayed", "key_reused"
    )
    assert again.booking["id"] == first.booking["id"] == other_body.booking["id"]
    assert await ledger(pool, event) == (10, 8, 2)
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1


async def test_a_key_used_in_an_earlier_batch_is_replayed(
    batcher: BookingBatcher, pool, organizer
) -> None:
    event = await insert_event(pool, organizer, capacity=10)
    [user, neighbour] = await insert_users(pool, 2)
    [first] = await book_together(batcher, event, [request(user, event, 1, key="k")])
    replay, fresh, reused = await book_together(batcher, event, [
        request(user, event, 1, key="k"), request(neighbour, event, 1, key="k"),
        request(user, event, 4, key="k"),
    ])
    assert (replay.outcome, replay.booking["id"]) == ("replayed", first.booking["id"])
    # Keys belong to one customer: the same key from another customer is a new booking.
    assert fresh.outcome == "created"
    assert (reused.outcome, reused.booking["id"]) == ("key_reused", first.booking["id"])
    assert await ledger(pool, event) == (10, 8, 2)


async def test_a_key_whose_first_request_was_refused_can_book_later_in_the_batch(
    batcher: BookingBatcher, pool, organizer
) -> None:
    event = await insert_event(pool, organizer, capacity=2)
    [user] = await insert_users(pool, 1)
    refused, smaller = await book_together(batcher, event, [
        request(user, event, 3, key="k"), request(user, event, 2, key="k"),
    ])
    assert (refused.outcome, refused.available) == ("sold_out", 2)
    assert (smaller.outcome, smaller.available) == ("created", 0)


async def test_refusals_carry_the_codes_of_book_tickets(
    batcher: BookingBatcher, pool, organizer
) -> None:
    event = await insert_event(pool, organizer, capacity=5, max_tickets_per_booking=2)
    cancelled = await insert_event(pool, organizer, capacity=5, status="cancelled")
    [user] = await insert_users(pool, 1)
    [too_many] = await book_together(batcher, event, [request(user, event, 3)])
    assert (too_many.outcome, too_many.allowed) == ("too_many_tickets", 2)
    [not_bookable] = await book_together(batcher, cancelled, [request(user, cancelled)])
    assert not_bookable.outcome == "event_not_bookable"
    missing = uuid.uuid4()
    [not_found] = await book_together(batcher, missing, [request(user, missing)])
    assert (not_found.outcome, not_found.booking) == ("event_not_found", None)
    assert await pool.fetchval("SELECT count(*) FROM bookings") == 0


async def test_a_customers_requests_in_one_call_count_toward_the_cap_in_arrival_order(
    batcher: BookingBatcher, pool, organizer
) -> None:
    capped = await insert_event(
        pool, organizer, capacity=20, max_tickets_per_customer=5, max_tickets_per_booking=5
    )
    free = await insert_event(pool, organizer, capacity=20)
    ada, bob = await insert_users(pool, 2)
    answers = await asyncio.gather(
        batcher.book(capped, request(ada, capped, 3)),
        batcher.book(capped, request(ada, capped, 3, key="k")),
        batcher.book(free, request(ada, free, 9)),
        batcher.book(capped, request(bob, capped, 5)),
        batcher.book(capped, request(ada, capped, 2)),
    )
    assert batcher.calls == 1
    assert [(a.outcome, a.available, a.allowed) for a in answers] == [
        ("created", 17, None), ("customer_limit_reached", None, 2), ("created", 11, None),
        ("created", 12, None), ("created", 10, None),
    ]
    assert await ledger(pool, capped) == (20, 10, 10)


async def test_a_failing_batch_falls_back_so_one_bad_request_fails_alone(
    batcher: BookingBatcher, pool, organizer
) -> None:
    event = await insert_event(pool, organizer, capacity=10)
    users = await insert_users(pool, 4)
    gone = uuid.uuid4()  # no such customer: its insert breaks the batch's foreign key
    answers = await book_together(batcher, event, [
        request(users[0], event), request(users[1], event), request(gone, event),
        request(users[2], event), request(users[3], event),
    ])
    assert isinstance(answers[2], asyncpg.ForeignKeyViolationError)
    assert [a.outcome for n, a in enumerate(answers) if n != 2] == ["created"] * 4
    assert await ledger(pool, event) == (10, 6, 4)
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 4


async def test_a_cancelled_waiter_does_not_stop_the_others(
    batcher: BookingBatcher, pool, organizer
) -> None:
    event = await insert_event(pool, organizer, capacity=10)
    users = await insert_users(pool, 3)
    tasks = [asyncio.create_task(batcher.book(event, request(u, event))) for u in users]
    await asyncio.sleep(0)
    tasks[1].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    assert done[0].outcome == done[2].outcome == "created"
    # Decided all the same, like a booking whose client hung up.
    capacity, available, held = await ledger(pool, event)
    assert available == capacity - held
    assert held == 3


async def test_requests_for_several_events_share_a_call_each_against_its_own_event(
    batcher: BookingBatcher, pool, organizer
) -> None:
    small = await insert_event(pool, organizer, capacity=1)
    large = await insert_event(pool, organizer, capacity=5)
    users = await insert_users(pool, 4)
    answers = await asyncio.gather(
        batcher.book(small, request(users[0], small)),
        batcher.book(large, request(users[1], large, 3)),
        batcher.book(small, request(users[2], small)),
        batcher.book(large, request(users[3], large, 2)),
    )
    assert batcher.calls == 1
    assert [(a.outcome, a.available) for a in answers] == [
        ("created", 0), ("created", 2), ("sold_out", 0), ("created", 0)
    ]
    assert [a.booking["event_id"] for a in answers if a.booking] == [small, large, large]
    assert await ledger(pool, small) == (1, 0, 1)
    assert await ledger(pool, large) == (5, 0, 5)


async def test_an_event_locked_long_elsewhere_does_not_stall_the_other_events(
    batcher: BookingBatcher, pool, organizer
) -> None:
    busy = await insert_event(pool, organizer, capacity=5)
    quiet = await insert_event(pool, organizer, capacity=5)
    users = await insert_users(pool, 4)
    async with pool.acquire() as conn, conn.transaction():
        # Someone else holds the busy event's row (a cancel of a large event, say).
        await conn.execute("SELECT 1 FROM events WHERE id = $1 FOR UPDATE", busy)
        waiting = asyncio.ensure_future(batcher.book(busy, request(users[0], busy)))
        started = asyncio.get_running_loop().time()
        quiet_answers = await asyncio.gather(
            *(batcher.book(quiet, request(u, quiet)) for u in users[1:])
        )
        waited = asyncio.get_running_loop().time() - started
        assert not waiting.done()
    assert [a.outcome for a in quiet_answers] == ["created"] * 3
    # About one lock_timeout (100 ms), not as long as the other transaction.
    assert waited < 2
    assert (await waiting).outcome == "created"
    assert await ledger(pool, busy) == (5, 4, 1)
    assert await ledger(pool, quiet) == (5, 2, 3)


async def test_later_bookings_do_not_wait_behind_a_request_stuck_on_a_locked_event(
    batcher: BookingBatcher, pool, organizer
) -> None:
    busy = await insert_event(pool, organizer, capacity=5)
    quiet = await insert_event(pool, organizer, capacity=5)
    users = await insert_users(pool, 2)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM events WHERE id = $1 FOR UPDATE", busy)
        stuck = asyncio.ensure_future(batcher.book(busy, request(users[0], busy)))
        await asyncio.sleep(0.5)  # its batch timed out; it now waits alone for the lock
        answer = await asyncio.wait_for(batcher.book(quiet, request(users[1], quiet)), 2)
        assert answer.outcome == "created"
        assert not stuck.done()
    assert (await stuck).outcome == "created"


async def hold_each(batcher: BookingBatcher, event: uuid.UUID,
                    users: list[uuid.UUID]) -> list[uuid.UUID]:
    held = await asyncio.gather(*(
        batcher.book(event, dataclasses.replace(request(u, event), hold=True)) for u in users
    ))
    assert [h.outcome for h in held] == ["created"] * len(users)
    return [h.booking["id"] for h in held]


async def test_confirmations_arriving_together_share_one_call_each_with_its_own_answer(
    batcher: BookingBatcher, pool, organizer
) -> None:
    event = await insert_event(pool, organizer, capacity=10)
    users = await insert_users(pool, 4)
    holds = await hold_each(batcher, event, users)
    calls = batcher.calls
    stranger = users[0]  # confirming another customer's hold finds none
    answers = await asyncio.gather(
        batcher.confirm(Confirmation(holds[0], users[0], "pay-0", "r0")),
        batcher.confirm(Confirmation(holds[1], users[1], None, "r1")),
        batcher.confirm(Confirmation(holds[2], stranger, None, "r2")),
        batcher.confirm(Confirmation(holds[0], users[0], "pay-0", "r3")),
        batcher.confirm(Confirmation(holds[3], users[3], None, "r4")),
    )
    assert batcher.calls == calls + 1
    assert [a["outcome"] for a in answers] == [
        "confirmed", "confirmed", "hold_not_found", "replayed", "confirmed"
    ]
    assert answers[0]["hold_id"] == holds[0]
    assert answers[0]["payment_reference"] == "pay-0"
    assert answers[3]["id"] == answers[0]["id"]
    assert [a["user_id"] for a in answers if a["id"]] == [users[0], users[1], users[0],
                                                           users[3]]
    # Each booking its own confirmation mail, carrying its own request id.
    assert sorted(await pool.fetchval(
        "SELECT array_agg(request_id) FROM outbox WHERE kind = 'booking_confirmed'"
    )) == ["r0", "r1", "r4"]
    assert await ledger(pool, event) == (10, 6, 3)


async def test_a_hold_locked_elsewhere_does_not_stall_the_other_confirmations(
    batcher: BookingBatcher, pool, organizer
) -> None:
    event = await insert_event(pool, organizer, capacity=10)
    users = await insert_users(pool, 3)
    holds = await hold_each(batcher, event, users)
    async with pool.acquire() as conn, conn.transaction():
        # A hold in another transaction's hands (a release, say) past the batch's bound.
        await conn.execute("SELECT 1 FROM holds WHERE id = $1 FOR UPDATE", holds[1])
        stuck = asyncio.ensure_future(
            batcher.confirm(Confirmation(holds[1], users[1], None, "r1"))
        )
        others = await asyncio.wait_for(asyncio.gather(
            batcher.confirm(Confirmation(holds[0], users[0], None, "r0")),
            batcher.confirm(Confirmation(holds[2], users[2], None, "r2")),
        ), 5)
        assert [a["outcome"] for a in others] == ["confirmed", "confirmed"]
        assert not stuck.done()
    assert (await stuck)["outcome"] == "confirmed"
    assert await ledger(pool, event) == (10, 7, 3)


class LostConnectionPool:
    """A pool whose batch call fails after it was sent: it may have committed."""

    def __init__(self) -> None:
        self.alone = 0

    def get_max_size(self) -> int:
        return 2

    async def fetch(self, *args: object) -> list[object]:
        raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle")

    async def fetchrow(self, *args: object) -> object:
        self.alone += 1
        raise AssertionError("a call that may have committed is never decided again")


async def test_a_batch_whose_outcome_is_unknown_is_not_decided_again() -> None:
    pool = LostConnectionPool()
    batcher = BookingBatcher(pool)  # type: ignore[arg-type]
    event = uuid.uuid4()
    answers = await book_together(
        batcher, event, [request(uuid.uuid4(), event) for _ in range(3)]
    )
    assert all(isinstance(a, asyncpg.ConnectionDoesNotExistError) for a in answers)
    assert pool.alone == 0
