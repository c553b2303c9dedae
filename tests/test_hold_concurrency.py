"""Holds, confirmations, releases and bookings of many customers at once over two ticket
types with small quotas, while holds run out (they last a second) and the holds actor
gives their tickets back: no count ever goes past a quota, every ticket is sold, held or
available, and a confirmation racing its hold's expiry has one winner.

EVENTBOOK_HOLD_RACE_SECONDS sets how long the customers shop (default 4); a long run
(60, say) is the heavy variant (past 100 s, raise pytest's timeout: -o timeout=...)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import random
import time
import uuid
from collections import Counter
from typing import Any

import asyncpg

from eventbook.check import consistency_report
from eventbook.keys import METRICS
from tests.client import Api, User, eventually, expect

RACE_SECONDS = float(os.environ.get("EVENTBOOK_HOLD_RACE_SECONDS", "4"))
CUSTOMERS = 100
CAPACITY = 50
QUOTA = 30

# What a customer does with a hold: confirm it at once, right around its expires_at
# (before or after by up to 50 ms: the race with the actor), a tenth of a second after
# it (always too late), release it at some point, or walk away.
# The share of bookings (made directly or by a confirmation) cancelled soon after.
CANCELLED = 0.7
FATES = {"confirm": 1, "confirm_at_expiry": 3, "confirm_late": 1, "release": 2, "abandon": 2}

LEDGER = """
SELECT e.capacity, e.available_tickets,
       (SELECT coalesce(sum(b.quantity), 0) FROM bookings b
         WHERE b.event_id = e.id AND b.status = 'confirmed') AS sold,
       (SELECT coalesce(sum(h.quantity), 0) FROM holds h
         WHERE h.event_id = e.id AND h.status = 'held') AS held
  FROM events e WHERE e.id = $1::uuid
"""
TYPE_LEDGER = """
SELECT t.id, t.quota, t.taken,
       (SELECT coalesce(sum(i.quantity), 0) FROM booking_items i
          JOIN bookings b ON b.id = i.booking_id
         WHERE i.ticket_type_id = t.id AND b.status = 'confirmed') AS sold,
       (SELECT coalesce(sum(i.quantity), 0) FROM hold_items i
          JOIN holds h ON h.id = i.hold_id
         WHERE i.ticket_type_id = t.id AND h.status = 'held') AS held
  FROM ticket_types t WHERE t.event_id = $1::uuid
"""


async def miscounts(conn: asyncpg.Connection, event_id: str) -> list[str]:
    """What is wrong with the event's counts, read in one snapshot: a count past its
    quota, or tickets neither sold, held nor available."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        event = await conn.fetchrow(LEDGER, event_id)
        types = await conn.fetch(TYPE_LEDGER, event_id)
    wrong = []
    taken = event["capacity"] - event["available_tickets"]
    if not 0 <= taken <= event["capacity"]:
        wrong.append(f"event over capacity: {dict(event)}")
    if taken != event["sold"] + event["held"]:
        wrong.append(f"event tickets unaccounted for: {dict(event)}")
    if taken != sum(t["taken"] for t in types):
        wrong.append(f"types and event disagree: {dict(event)} {[dict(t) for t in types]}")
    for kind in types:
        if kind["quota"] is not None and kind["taken"] > kind["quota"]:
            wrong.append(f"type over quota: {dict(kind)}")
        if kind["taken"] != kind["sold"] + kind["held"]:
            wrong.append(f"type tickets unaccounted for: {dict(kind)}")
    return wrong


@dataclasses.dataclass
class Taken:
    """A hold a customer got, what they did with it and what they were answered."""

    id: str
    quantity: int
    expires_at: float
    fate: str
    status: int | None = None
    body: Any = None


class Shop:
    """Customers shopping at once until `end`, every request's answer recorded."""

    def __init__(self, api: Api, event: dict[str, Any], types: list[dict[str, Any]],
                 end: float) -> None:
        self.api = api
        self.event = event
        self.types = types
        self.end = end
        self.answers: Counter[tuple[str, int, str | None]] = Counter()
        self.holds: list[Taken] = []
        # Every booking made (answered 201), and those cancelled since (answered 200).
        self.booked: list[dict[str, Any]] = []
        self.cancelled: list[dict[str, Any]] = []

    async def customer(self, customer: User, rng: random.Random) -> None:
        while time.monotonic() < self.end:
            chosen = rng.sample(self.types, rng.choice((1, 1, 2)))
            items = [{"ticket_type_id": t["id"], "quantity": rng.randint(1, 2)} for t in chosen]
            if rng.random() < 0.1:
                answer = await self.api.post(
                    f"/api/v1/events/{self.event['id']}/bookings", customer,
                    json={"items": items},
                )
                body = await self.note("book", answer)
                if answer.status == 201:
                    await self.keep_or_cancel(customer, body, rng)
                    continue
            else:
                answer = await self.api.hold(customer, self.event, items=items)
                body = await self.note("hold", answer)
                if answer.status == 201:
                    await self.decide(customer, body, rng)
                    continue
            await asyncio.sleep(rng.uniform(0.1, 0.4))

    async def decide(self, customer: User, hold: dict[str, Any], rng: random.Random) -> None:
        fate = rng.choices(list(FATES), weights=list(FATES.values()))[0]
        expires_at = dt.datetime.fromisoformat(hold["expires_at"]).timestamp()
        taken = Taken(hold["id"], hold["quantity"], expires_at, fate)
        self.holds.append(taken)
        until_expiry = expires_at - time.time()
        if fate == "abandon":
            return
        if fate == "release":
            await asyncio.sleep(rng.uniform(0, until_expiry))
            answer = await self.api.delete(f"/api/v1/holds/{hold['id']}", customer)
            taken.status = answer.status
            self.answers[("release", answer.status, None)] += 1
            return
        delay = {"confirm": 0.0, "confirm_at_expiry": until_expiry + rng.uniform(-0.05, 0.05),
                 "confirm_late": until_expiry + 0.1}[fate]
        await asyncio.sleep(max(delay, 0))
        answer = await self.api.confirm(customer, hold, payment_reference=f"pay-{hold['id']}")
        taken.status = answer.status
        taken.body = await self.note("confirm", answer)
        if answer.status == 201:
            await self.keep_or_cancel(customer, taken.body, rng)

    async def keep_or_cancel(
        self, customer: User, booking: dict[str, Any], rng: random.Random
    ) -> None:
        """Most bookings are cancelled soon, so tickets keep coming back to be held."""
        self.booked.append(booking)
        if rng.random() < CANCELLED:
            await asyncio.sleep(rng.uniform(0, 0.5))
            answer = await self.api.post(f"/api/v1/bookings/{booking['id']}/cancel", customer)
            await self.note("cancel", answer)
            if answer.status == 200:
                self.cancelled.append(booking)

    async def note(self, kind: str, answer: Any) -> Any:
        body = await answer.json()
        code = body.get("code") if answer.status >= 400 else None
        self.answers[(kind, answer.status, code)] += 1
        return body


async def watch(pool: asyncpg.Pool, event_id: str, stop: asyncio.Event) -> tuple[int, list[str]]:
    """Read the counts over and over until `stop`: how many times, and what was wrong."""
    samples = 0
    wrong: list[str] = []
    async with pool.acquire() as conn:
        while not stop.is_set():
            wrong.extend(await miscounts(conn, event_id))
            samples += 1
            await asyncio.sleep(0.02)
    return samples, wrong


async def test_holds_confirms_releases_and_bookings_racing_expiries_keep_every_count(
    holds_api: Api, pool: asyncpg.Pool
) -> None:
    api = holds_api
    organizer = await api.register(role="organizer")
    event = await api.create_event(organizer, capacity=CAPACITY)
    [general] = await api.ticket_types(event)
    types = [await api.add_ticket_type(organizer, event, name=name, price_cents=price,
                                       quota=QUOTA)
             for name, price in (("Early bird", 1500), ("Standard", 2500))]
    deleted = await api.delete(f"/api/v1/events/{event['id']}/ticket-types/{general['id']}",
                               organizer)
    assert deleted.status == 204, await deleted.text()
    customers = await api.seed_users(pool, CUSTOMERS)

    shop = Shop(api, event, types, time.monotonic() + RACE_SECONDS)
    stop = asyncio.Event()
    watching = asyncio.create_task(watch(pool, event["id"], stop))
    try:
        await asyncio.gather(*(shop.customer(customer, random.Random(n))
                               for n, customer in enumerate(customers)))
        await eventually(lambda: _no_live_holds(pool, event["id"]), timeout=10)
    finally:
        stop.set()
    samples, wrong = await watching
    assert wrong == []
    assert samples >= 10 * RACE_SECONDS
    async with pool.acquire() as conn:
        assert await miscounts(conn, event["id"]) == []

    assert set(shop.answers) <= {
        ("hold", 201, None), ("hold", 409, "sold_out"),
        ("book", 201, None), ("book", 409, "sold_out"),
        ("confirm", 201, None), ("confirm", 409, "hold_expired"),
        ("release", 204, None), ("cancel", 200, None),
    }, shop.answers
    # The race was run: the quotas were reached, and confirmations both won and lost.
    assert shop.answers[("hold", 409, "sold_out")] > 0
    assert shop.answers[("confirm", 201, None)] > 0
    assert shop.answers[("confirm", 409, "hold_expired")] > 0

    rows = {str(row["id"]): row for row in await pool.fetch(
        "SELECT h.id, h.status, h.booking_id, h.expires_at, h.ended_at,"
        " array_remove(array_agg(b.id), NULL) AS bookings"
        " FROM holds h LEFT JOIN bookings b ON b.hold_id = h.id"
        " WHERE h.event_id = $1::uuid GROUP BY h.id", event["id"],
    )}
    assert set(rows) == {hold.id for hold in shop.holds}
    for hold in shop.holds:
        row = rows[hold.id]
        on_time = row["ended_at"] < row["expires_at"]
        if row["status"] == "confirmed":
            # Confirmed before it ran out, into one booking, and never given back.
            assert (hold.status, on_time) == (201, True), (hold, row)
            assert row["bookings"] == [row["booking_id"]] == [uuid.UUID(hold.body["id"])]
        else:
            # Ended without a booking: released by its customer before it ran out, or
            # expired once it had.
            assert row["bookings"] == [] and row["booking_id"] is None, (hold, row)
            assert (row["status"], on_time) in {("released", True), ("expired", False)}
            assert hold.status in (None, 204, 409), (hold, row)
            if hold.status == 409:
                assert row["status"] == "expired" and hold.body["code"] == "hold_expired"
            if row["status"] == "released":
                assert hold.fate == "release"
        if hold.fate == "confirm_late":
            assert hold.status == 409, (hold, row)

    # Every ticket sold was answered 201 and not cancelled since, and nothing else was
    # sold.
    confirmed = [hold for hold in shop.holds if hold.status == 201]
    sold = sum(b["quantity"] for b in shop.booked) - sum(b["quantity"] for b in shop.cancelled)
    assert (await pool.fetchrow(LEDGER, event["id"]))["sold"] == sold
    expired = sum(row["status"] == "expired" for row in rows.values())
    metrics = api.app[METRICS].registry
    assert metrics.get_sample_value("eventbook_holds_total", {"event": "expired"}) == expired
    assert metrics.get_sample_value(
        "eventbook_holds_total", {"event": "confirmed"}) == len(confirmed)

    async with pool.acquire() as conn:
        # Mail is not sent here (only the holds actor runs): the outbox is not checked.
        report = await consistency_report(conn, outbox_age_s=3600, confirmation_window_s=3600)
    assert report == {kind: [] for kind in report}


async def _no_live_holds(pool: asyncpg.Pool, event_id: str) -> bool:
    return not await pool.fetchval(
        "SELECT count(*) FROM holds WHERE event_id = $1::uuid AND status = 'held'", event_id
    )


async def test_200_confirmations_sent_as_their_holds_run_out_each_have_one_winner(
    holds_api: Api, pool: asyncpg.Pool
) -> None:
    """200 holds run out in the same instant; each customer confirms within a fifth of a
    second either side of it while the holds actor expires them: a confirmation answered
    201 has its booking and its hold confirmed before it ran out, one answered 409
    hold_expired has no booking and its hold expired, never both, and the tickets add up."""
    api = holds_api
    organizer = await api.register(role="organizer")
    event = await api.create_event(organizer, capacity=400)
    customers = await api.seed_users(pool, 200)
    holds = [await expect(answer, 201) for answer in await asyncio.gather(
        *(api.hold(customer, event, quantity=2) for customer in customers)
    )]
    rng = random.Random(200)

    async def confirm_around_expiry(customer: User, hold: dict[str, Any]) -> Any:
        expires_at = dt.datetime.fromisoformat(hold["expires_at"]).timestamp()
        await asyncio.sleep(max(expires_at - time.time() + rng.uniform(-0.2, 0.2), 0))
        return await api.confirm(customer, hold)

    answers = await asyncio.gather(*(confirm_around_expiry(customer, hold)
                                     for customer, hold in zip(customers, holds, strict=True)))
    await eventually(lambda: _no_live_holds(pool, event["id"]), timeout=10)

    rows = {str(row["id"]): row for row in await pool.fetch(
        "SELECT h.id, h.status, h.ended_at < h.expires_at AS in_time,"
        " array_remove(array_agg(b.id::text), NULL) AS bookings"
        " FROM holds h LEFT JOIN bookings b ON b.hold_id = h.id GROUP BY h.id",
    )}
    winners: Counter[str] = Counter()
    for hold, answer in zip(holds, answers, strict=True):
        body = await answer.json()
        row = rows[hold["id"]]
        if answer.status == 201:
            assert (row["status"], row["in_time"], row["bookings"]) == (
                "confirmed", True, [body["id"]])
        else:
            assert (answer.status, body["code"]) == (409, "hold_expired")
            assert (row["status"], row["in_time"], row["bookings"]) == ("expired", False, [])
        winners[row["status"]] += 1
    assert winners["confirmed"] > 0 and winners["expired"] > 0, winners
    async with pool.acquire() as conn:
        assert await miscounts(conn, event["id"]) == []
    assert (await api.get_event(event))["available_tickets"] == 400 - 2 * winners["confirmed"]
