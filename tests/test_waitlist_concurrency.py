"""The waiting list under concurrency: 200 customers join a sold-out event at once, 60
tickets come back at once (bookings cancelled through the API, holds running out) while
hundreds of other customers keep trying to book, and offers run out or are confirmed in
the same instant. Offers go to the first in line, in order, once each; the public gets
none of the tickets that came back; and every count agrees."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from eventbook.app import create_app
from eventbook.check import consistency_report
from eventbook.config import Config
from tests.client import Api, User, eventually, expect
from tests.conftest import Inbox
from tests.seed import insert_attendees, insert_holds

KEPT = 40            # bookings of one ticket, never cancelled
CANCELLED = 15       # bookings of two tickets, cancelled through the API: 30 back
EXPIRING = 30        # holds of one ticket that run out: 30 back
RETURNED = 2 * CANCELLED + EXPIRING
CAPACITY = KEPT + RETURNED
WAITING = 200
PUBLIC = 300
ACCEPTED = 10        # the first offers, confirmed before the rest run out
OFFER_SECONDS = 1    # offers made once the first ones run out

ENTRIES = """
SELECT w.id, w.seq, w.user_id, w.quantity, w.status, w.hold_id, w.offered_at, w.ended_at,
       h.status AS hold_status, h.expires_at, h.quantity AS hold_quantity
  FROM waitlist_entries w LEFT JOIN holds h ON h.id = w.hold_id
 WHERE w.event_id = $1::uuid ORDER BY w.seq
"""
# The offers made, in the order they were made: outbox ids are taken under the event's
# row lock, so they order offers across transactions too. (Rows the relay has moved on
# are gone: read this while no relay runs.)
OFFERS_MADE = """
SELECT (payload ->> 'entry_id')::uuid AS entry_id, (payload ->> 'hold_id')::uuid AS hold_id
  FROM outbox WHERE kind = 'waitlist_offer' ORDER BY id
"""
TICKET_TYPE = """
SELECT t.quota, t.taken, t.reserved, t.waiting, e.capacity, e.available_tickets,
       (SELECT coalesce(sum(b.quantity), 0) FROM bookings b
         WHERE b.event_id = e.id AND b.status = 'confirmed') AS sold,
       (SELECT coalesce(sum(h.quantity), 0) FROM holds h
         WHERE h.event_id = e.id AND h.status = 'held') AS held
  FROM ticket_types t JOIN events e ON e.id = t.event_id WHERE e.id = $1::uuid
"""


@pytest.fixture
def with_actors(config: Config, aiohttp_client: Any) -> Callable[..., Awaitable[Api]]:
    """Start the app with only the named actors running, and return a client for it."""

    async def start(*names: str, **overrides: Any) -> Api:
        app = create_app(config.replace(actors=names, **overrides), actors=True)
        client: TestClient[web.Request, web.Application] = await aiohttp_client(app)
        return Api(client)

    return start


async def counts_agree(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        report = await consistency_report(conn, 3600, 3600)
    assert {kind: rows for kind, rows in report.items() if rows} == {}


def first_in_line(entries: list[asyncpg.Record], tickets: int) -> list[uuid.UUID]:
    """The entries, in order of joining, that `tickets` come back to: each takes its
    quantity until the next wants more than is left (nobody may skip ahead)."""
    offered = []
    for entry in entries:
        if entry["quantity"] > tickets:
            break
        tickets -= entry["quantity"]
        offered.append(entry["id"])
    return offered


async def sold_out_event(api: Api, pool: asyncpg.Pool) -> tuple[Any, list[User], list[Any]]:
    """An event of one ticket type, sold out: KEPT bookings of one, CANCELLED bookings of
    two (their customers returned), and EXPIRING holds of one (their ids returned)."""
    organizer = await api.register(role="organizer")
    event = await api.create_event(organizer, capacity=CAPACITY)
    keepers = await api.seed_users(pool, KEPT)
    cancellers = await api.seed_users(pool, CANCELLED)
    holders = await api.seed_users(pool, EXPIRING)
    event_id = uuid.UUID(event["id"])
    await insert_attendees(pool, event_id, [uuid.UUID(u.id) for u in keepers])
    await insert_attendees(pool, event_id, [uuid.UUID(u.id) for u in cancellers], quantity=2)
    holds = await insert_holds(pool, event_id, [uuid.UUID(u.id) for u in holders], 600)
    assert (await api.get_event(event))["available_tickets"] == 0
    return event, cancellers, holds


async def join_all(
    api: Api, event: Any, waiters: list[User], quantities: list[int]
) -> dict[str, Any]:
    """Every waiter joins at once, for their quantity; their answers by entry id."""
    answers = await asyncio.gather(*(
        api.join_waitlist(waiter, event, quantity=quantity)
        for waiter, quantity in zip(waiters, quantities, strict=True)
    ))
    joined = [await expect(answer, 201) for answer in answers]
    return {entry["id"]: entry for entry in joined}


async def expire(pool: asyncpg.Pool, holds: list[Any]) -> None:
    """The holds run out, one at a time in their own transactions, as the holds actor's
    expire_holds gives them back: polled until every one has."""
    while await pool.fetchval(
        "SELECT count(*) FROM holds WHERE id = ANY($1::uuid[]) AND status = 'held'", holds
    ):
        row = await pool.fetchrow("SELECT expired FROM expire_holds(1)")
        if not row["expired"]:
            await asyncio.sleep(0.005)


async def test_returned_tickets_go_to_the_first_in_line_in_order_not_to_the_public(
    with_actors: Any, pool: asyncpg.Pool, smtp_server: tuple[str, Inbox]
) -> None:
    url, inbox = smtp_server
    # Offers are mailed, but the outbox is read before the relay runs (OFFERS_MADE).
    api = await with_actors("confirmations", smtp_url=url)
    rng = random.Random(17)
    event, cancellers, holds = await sold_out_event(api, pool)

    waiters = await api.seed_users(pool, WAITING)
    joined = await join_all(api, event, waiters, rng.choices((1, 2), k=WAITING))
    entries = await pool.fetch(ENTRIES, event["id"])
    # Each was told its place as it joined: the order of joining, with no place twice.
    assert [joined[str(e["id"])]["position"] for e in entries] == list(range(1, WAITING + 1))
    assert {e["status"] for e in entries} == {"waiting"}
    expected = first_in_line(list(entries), RETURNED)

    # The tickets come back, all at once, while the public keeps asking for them.
    public = await api.seed_users(pool, PUBLIC)
    answers: Counter[tuple[str, int, str | None]] = Counter()

    async def try_to_buy(customer: User) -> None:
        for _ in range(2):
            await asyncio.sleep(rng.uniform(0, 1.0))
            quantity = rng.choice((1, 2))
            if rng.random() < 0.7:
                kind, answer = "book", await api.book(customer, event, quantity=quantity)
            else:
                kind, answer = "hold", await api.hold(customer, event, quantity=quantity)
            body = await answer.json()
            answers[(kind, answer.status, body.get("code"))] += 1

    async def cancel(customer: User) -> None:
        [booking] = (await expect(await api.get("/api/v1/bookings", customer), 200))["items"]
        await asyncio.sleep(rng.uniform(0, 0.8))
        await expect(await api.post(f"/api/v1/bookings/{booking['id']}/cancel", customer), 200)

    await pool.execute(
        "UPDATE holds SET expires_at = now() + random() * interval '0.8 seconds'"
        " WHERE id = ANY($1::uuid[])", holds,
    )
    await asyncio.gather(
        *(try_to_buy(customer) for customer in public),
        *(cancel(customer) for customer in cancellers),
        *(expire(pool, holds) for _ in range(3)),
    )

    # Not one of the public's attempts got a ticket.
    assert set(answers) == {("book", 409, "sold_out"), ("hold", 409, "sold_out")}, answers
    assert sum(answers.values()) == 2 * PUBLIC
    assert await pool.fetchval(
        "SELECT (SELECT count(*) FROM bookings WHERE user_id = ANY($1::uuid[]))"
        " + (SELECT count(*) FROM holds WHERE user_id = ANY($1::uuid[]))",
        [uuid.UUID(u.id) for u in public],
    ) == 0
    # Exactly the first in line were offered, each once, in order; the rest still wait.
    entries = await pool.fetch(ENTRIES, event["id"])
    offered = [e for e in entries if e["status"] == "offered"]
    assert [e["id"] for e in offered] == expected
    assert {e["status"] for e in entries[len(expected):]} == {"waiting"}
    assert all((e["hold_status"], e["hold_quantity"]) == ("held", e["quantity"])
               for e in offered)
    made = await pool.fetch(OFFERS_MADE)
    assert [row["entry_id"] for row in made] == expected
    assert [row["hold_id"] for row in made] == [e["hold_id"] for e in offered]
    assert await pool.fetchval(
        "SELECT count(*) FROM holds WHERE user_id = ANY($1::uuid[])",
        [uuid.UUID(u.id) for u in waiters],
    ) == len(expected)
    # Every ticket is sold, held by an offer, or reserved for the next in line.
    ledger = await pool.fetchrow(TICKET_TYPE, event["id"])
    offered_tickets = sum(e["quantity"] for e in offered)
    assert dict(ledger) == {
        "quota": None, "taken": CAPACITY, "reserved": RETURNED - offered_tickets,
        "waiting": WAITING - len(expected), "capacity": CAPACITY, "available_tickets": 0,
        "sold": KEPT, "held": offered_tickets,
    }
    await counts_agree(pool)

    # The first ACCEPTED confirm their offers; the rest run out, and what they held goes
    # down the line, offer after offer (each OFFER_SECONDS long, none taken up), until
    # everyone waiting has been offered.
    by_user = {uuid.UUID(w.id): w for w in waiters}
    for entry in offered[:ACCEPTED]:
        await expect(await api.confirm(by_user[entry["user_id"]], {"id": entry["hold_id"]}), 201)
    await pool.execute(
        "UPDATE holds SET expires_at = now() WHERE id = ANY($1::uuid[])",
        [e["hold_id"] for e in offered[ACCEPTED:]],
    )
    await with_actors("holds", waitlist_offer_seconds=OFFER_SECONDS)

    async def everyone_offered() -> bool:
        return not await pool.fetchval(
            "SELECT count(*) FROM waitlist_entries WHERE status IN ('waiting', 'offered')"
        )

    await eventually(everyone_offered, timeout=20, interval=0.1)
    entries = await pool.fetch(ENTRIES, event["id"])
    accepted = [e["id"] for e in offered[:ACCEPTED]]
    assert [e["id"] for e in entries if e["status"] == "accepted"] == accepted
    assert all((e["status"], e["hold_status"]) == ("expired", "expired")
               for e in entries if e["id"] not in accepted)
    # Each offered once, in order of joining: every offer made after an earlier entry's.
    made = await pool.fetch(OFFERS_MADE)
    assert [row["entry_id"] for row in made] == [e["id"] for e in entries]
    assert [row["hold_id"] for row in made] == [e["hold_id"] for e in entries]
    later = entries[len(expected):]
    assert {e["expires_at"] - e["offered_at"] for e in later} == {
        dt.timedelta(seconds=OFFER_SECONDS)}
    # Nobody waits any more: everything not sold is on sale again, nothing reserved.
    sold = KEPT + sum(e["quantity"] for e in offered[:ACCEPTED])
    ledger = await pool.fetchrow(TICKET_TYPE, event["id"])
    assert dict(ledger) == {
        "quota": None, "taken": sold, "reserved": 0, "waiting": 0, "capacity": CAPACITY,
        "available_tickets": CAPACITY - sold, "sold": sold, "held": 0,
    }
    await counts_agree(pool)

    # One offer mail per entry, recorded once and sent once.
    await with_actors("relay")

    async def offers_mailed() -> bool:
        return await pool.fetchval(
            "SELECT count(sent_at) FROM notifications WHERE kind = 'waitlist_offer'"
        ) == WAITING

    await eventually(offers_mailed, timeout=20)
    notes = await pool.fetch("SELECT hold_id FROM notifications WHERE kind = 'waitlist_offer'")
    assert sorted(n["hold_id"] for n in notes) == sorted(e["hold_id"] for e in entries)
    emails = {uuid.UUID(w.id): w.email for w in waiters}
    mailed = [to for recipients, mail in inbox.mails for to in recipients
              if mail["Subject"].startswith("Tickets for you")]
    assert Counter(mailed) == Counter(emails[e["user_id"]] for e in entries)


async def test_confirmations_racing_their_offers_expiry_end_each_offer_once(
    with_actors: Any, pool: asyncpg.Pool
) -> None:
    """40 offers run out in the same instant while the holds actor expires them and each
    customer sends three confirmations within a tenth of a second either side of it: each
    offer ends once, accepted into one booking or expired and passed on to the next in
    line, never both; the answers agree with how it ended."""
    api = await with_actors("holds")
    rng = random.Random(40)
    organizer = await api.register(role="organizer")
    event = await api.create_event(organizer, capacity=40)
    holders = await api.seed_users(pool, 40)
    await insert_attendees(pool, uuid.UUID(event["id"]), [uuid.UUID(u.id) for u in holders])
    waiters = await api.seed_users(pool, 80)
    await join_all(api, event, waiters, [1] * 80)

    async def cancel(customer: User) -> None:
        [booking] = (await expect(await api.get("/api/v1/bookings", customer), 200))["items"]
        await expect(await api.post(f"/api/v1/bookings/{booking['id']}/cancel", customer), 200)

    await asyncio.gather(*(cancel(customer) for customer in holders))
    entries = await pool.fetch(ENTRIES, event["id"])
    first = entries[:40]
    assert {e["status"] for e in first} == {"offered"}
    due = await pool.fetchval(
        "UPDATE holds SET expires_at = now() + interval '0.5 seconds'"
        " WHERE id = ANY($1::uuid[]) RETURNING expires_at", [e["hold_id"] for e in first],
    )
    by_user = {uuid.UUID(w.id): w for w in waiters}

    async def confirm(entry: asyncpg.Record) -> Any:
        answer = await api.confirm(by_user[entry["user_id"]], {"id": entry["hold_id"]})
        return answer.status, await answer.json()

    async def confirm_around_expiry(entry: asyncpg.Record, offset: float) -> Any:
        await asyncio.sleep(max(due.timestamp() - time.time() + offset, 0))
        return await asyncio.gather(confirm(entry), confirm(entry), confirm(entry))

    answers = [answer for three in await asyncio.gather(*(
        confirm_around_expiry(entry, rng.uniform(-0.3, 0.3)) for entry in first
    )) for answer in three]

    async def offers_ended() -> bool:
        return not await pool.fetchval(
            "SELECT count(*) FROM holds WHERE id = ANY($1::uuid[]) AND status = 'held'",
            [e["hold_id"] for e in first],
        )

    await eventually(offers_ended, timeout=10)
    bookings = {row["hold_id"]: row["ids"] for row in await pool.fetch(
        "SELECT hold_id, array_agg(id::text) AS ids FROM bookings"
        " WHERE hold_id IS NOT NULL GROUP BY hold_id"
    )}
    entries = await pool.fetch(ENTRIES, event["id"])
    ended: Counter[str] = Counter()
    for n, entry in enumerate(entries[:40]):
        mine = answers[3 * n:3 * n + 3]
        booked = {body["id"] for status, body in mine if status in (200, 201)}
        refused = [(status, body["code"]) for status, body in mine if status >= 400]
        ended[entry["status"]] += 1
        if entry["status"] == "accepted":
            # Confirmed in time, into one booking: every confirmation answered with it,
            # but one sent once the offer had run out, which may have been told so.
            assert entry["hold_status"] == "confirmed", dict(entry)
            assert entry["ended_at"] < entry["expires_at"], dict(entry)
            assert [booked] == [set(bookings[entry["hold_id"]])], (dict(entry), mine)
            assert set(refused) <= {(409, "hold_expired")}, mine
        else:
            assert (entry["status"], entry["hold_status"]) == ("expired", "expired")
            assert entry["ended_at"] >= entry["expires_at"], dict(entry)
            assert entry["hold_id"] not in bookings
            assert refused == [(409, "hold_expired")] * 3, mine
    assert ended["accepted"] > 0 and ended["expired"] > 0, ended
    assert ended["accepted"] + ended["expired"] == 40

    # What ran out went to the next in line, in order, at once.
    moved_on = entries[40:40 + ended["expired"]]
    assert {e["status"] for e in moved_on} == {"offered"}
    assert {e["status"] for e in entries[40 + ended["expired"]:]} == {"waiting"}
    made = await pool.fetch(OFFERS_MADE)
    assert [row["entry_id"] for row in made] == [e["id"] for e in entries[:40] + moved_on]
    ledger = await pool.fetchrow(TICKET_TYPE, event["id"])
    assert dict(ledger) == {
        "quota": None, "taken": 40, "reserved": 0, "waiting": 40 - ended["expired"],
        "capacity": 40, "available_tickets": 0, "sold": ended["accepted"],
        "held": ended["expired"],
    }
    await counts_agree(pool)
