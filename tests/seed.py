"""Data written straight into PostgreSQL, for the tests and the bench that need a lot of
it fast."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, NamedTuple

import asyncpg

from eventbook import db, emails

BOOK_TICKETS = db.query("book_tickets")


class SeededUser(NamedTuple):
    id: uuid.UUID
    email: str


async def seed_users(
    pool: asyncpg.Pool, count: int, role: str = "customer", name: str = "Seeded"
) -> list[SeededUser]:
    """`count` users written in one statement, each with its address's key as
    eventbook.emails makes it and an unusable password hash: they never log in, they are
    given tokens. One statement whatever `count`, so the bench's hundred thousand cost
    seconds, not minutes."""
    addresses = [f"seed-{uuid.uuid4()}@example.com" for _ in range(count)]
    # Off the event loop: keying a hundred thousand addresses takes a second or two.
    keys = await asyncio.to_thread(lambda: [emails.key(address) for address in addresses])
    rows = await pool.fetch(
        """
        INSERT INTO users (email, email_key, name, role, password_hash)
        SELECT address, key, $3 || ' ' || n, $4, '!'
          FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS seeded (address, key, n)
        RETURNING id, email
        """,
        addresses, keys, name, role,
    )
    return [SeededUser(row["id"], row["email"]) for row in rows]


async def insert_users(
    pool: asyncpg.Pool, count: int, role: str = "customer", name: str = "Seeded"
) -> list[uuid.UUID]:
    """The ids of `count` new users written by `seed_users`."""
    return [user.id for user in await seed_users(pool, count, role, name)]


async def insert_event(
    pool: asyncpg.Pool, organizer_id: uuid.UUID | None = None, capacity: int = 100,
    **columns: Any,
) -> uuid.UUID:
    """A scheduled event 30 days ahead, of a new organizer unless one is given."""
    if organizer_id is None:
        [organizer_id] = await insert_users(pool, 1, role="organizer")
    values = {"title": "Seeded event", "capacity": capacity, "available_tickets": capacity,
              **columns}
    names = ", ".join(values)
    params = ", ".join(f"${n}" for n in range(3, len(values) + 3))
    event_id: uuid.UUID = await pool.fetchval(
        f"INSERT INTO events (organizer_id, starts_at, {names})"
        f" VALUES ($1, now() + make_interval(days => $2), {params}) RETURNING id",
        organizer_id, 30, *values.values(),
    )
    return event_id


async def move_event(
    pool: asyncpg.Pool | asyncpg.Connection, event: uuid.UUID | str | dict[str, Any],
    starts: str, ends: str | None = None,
) -> None:
    """Set an event's times relative to now, as PostgreSQL intervals ('-2 hours'): the
    API only takes future starts, so a test moves an event into the past here."""
    event_id = uuid.UUID(str(event["id"] if isinstance(event, dict) else event))
    await pool.execute(
        "UPDATE events SET starts_at = now() + $2::text::interval,"
        " ends_at = now() + $3::text::interval WHERE id = $1",
        event_id, starts, ends,
    )


async def insert_attendees(
    pool: asyncpg.Pool, event_id: uuid.UUID, user_ids: list[uuid.UUID], quantity: int = 1
) -> None:
    """One confirmed booking each (confirmation already sent) of the event's first ticket
    type, tickets taken from the event and the type."""
    await pool.execute(
        """
        WITH kind AS (
            SELECT id FROM ticket_types WHERE event_id = $1 ORDER BY created_at, id LIMIT 1
        ), made AS (
            INSERT INTO bookings (event_id, user_id, quantity, confirmation_status, confirmed_at)
            SELECT $1, u, $3, 'sent', now() FROM unnest($2::uuid[]) AS u
            RETURNING id, quantity
        ), items AS (
            INSERT INTO booking_items (booking_id, ticket_type_id, quantity, price_cents)
            SELECT made.id, kind.id, made.quantity, 0 FROM made, kind
        ), typed AS (
            UPDATE ticket_types SET taken = taken + (SELECT sum(quantity) FROM made)
             WHERE id = (SELECT id FROM kind)
        )
        UPDATE events SET available_tickets = available_tickets - (SELECT sum(quantity) FROM made)
         WHERE id = $1
        """,
        event_id, user_ids, quantity,
    )


async def insert_unconfirmed_booking(
    pool: asyncpg.Pool, event_id: uuid.UUID, user_id: uuid.UUID, age_seconds: float = 3600,
    confirmation_status: str = "pending",
) -> uuid.UUID:
    """A booking of one ticket made `age_seconds` ago whose confirmation mail was never
    sent, with no outbox row: as if the message that would send it had been lost."""
    booking_id: uuid.UUID = await pool.fetchval(
        """
        WITH kind AS (
            SELECT id FROM ticket_types WHERE event_id = $1 ORDER BY created_at, id LIMIT 1
        ), made AS (
            INSERT INTO bookings (event_id, user_id, quantity, confirmation_status, created_at)
            VALUES ($1, $2, 1, $4, now() - make_interval(secs => $3))
            RETURNING id
        ), items AS (
            INSERT INTO booking_items (booking_id, ticket_type_id, quantity, price_cents)
            SELECT made.id, kind.id, 1, 0 FROM made, kind
        ), typed AS (
            UPDATE ticket_types SET taken = taken + 1 WHERE id = (SELECT id FROM kind)
        ), taken AS (
            UPDATE events SET available_tickets = available_tickets - 1 WHERE id = $1
        )
        SELECT id FROM made
        """,
        event_id, user_id, age_seconds, confirmation_status,
    )
    return booking_id


async def ledger(
    pool: asyncpg.Pool, event: uuid.UUID | str | dict[str, Any]
) -> tuple[int, int, int]:
    """(capacity, available_tickets, tickets held by confirmed bookings) of an event, given
    as an id or as the API's event object."""
    event_id = uuid.UUID(str(event["id"] if isinstance(event, dict) else event))
    row = await pool.fetchrow(
        "SELECT e.capacity, e.available_tickets,"
        " (SELECT coalesce(sum(quantity), 0) FROM bookings b"
        "   WHERE b.event_id = e.id AND b.status = 'confirmed') AS held"
        " FROM events e WHERE e.id = $1",
        event_id,
    )
    return row["capacity"], row["available_tickets"], row["held"]


async def insert_holds(
    pool: asyncpg.Pool, event_id: uuid.UUID | str, user_ids: list[uuid.UUID], seconds: int,
    quantity: int = 1, ticket_type_id: uuid.UUID | str | None = None,
) -> list[uuid.UUID]:
    """One hold of `quantity` tickets per user, lasting `seconds`, taken as the server
    takes them (book_tickets, 500 to a call, so all of one call run out together)."""
    return await _take_tickets(pool, event_id, user_ids, True, seconds, quantity,
                               ticket_type_id)


async def insert_bookings(
    pool: asyncpg.Pool, event_id: uuid.UUID | str, user_ids: list[uuid.UUID]
) -> list[uuid.UUID]:
    """One booking of one ticket per user, made as the server makes them (book_tickets:
    each booking and its outbox rows in the transaction of its call, 500 to a call)."""
    return await _take_tickets(pool, event_id, user_ids, False, 600, 1, None)


async def _take_tickets(
    pool: asyncpg.Pool, event_id: uuid.UUID | str, user_ids: list[uuid.UUID], hold: bool,
    seconds: int, quantity: int, ticket_type_id: uuid.UUID | str | None,
) -> list[uuid.UUID]:
    taken = []
    for start in range(0, len(user_ids), 500):
        users = user_ids[start:start + 500]
        count = len(users)
        rows = await pool.fetch(
            BOOK_TICKETS, [uuid.UUID(str(event_id))] * count, users, [hold] * count,
            [1] * count, [None] * count, ["seeded"] * count,
            [f"seed-{start + n}" for n in range(count)],
            [None if ticket_type_id is None else uuid.UUID(str(ticket_type_id))] * count,
            [quantity] * count, seconds, None,
        )
        assert {row["outcome"] for row in rows} == {"created"}, rows[0]
        taken.extend(row["id"] for row in rows)
    return taken


async def insert_webhook_endpoint(
    pool: asyncpg.Pool, organizer_id: uuid.UUID | None = None, **columns: Any
) -> uuid.UUID:
    """A webhook endpoint wanting every type, of a new organizer unless one is given;
    `columns` override (status='paused', paused_reason=..., paused_at=...)."""
    if organizer_id is None:
        [organizer_id] = await insert_users(pool, 1, role="organizer")
    values = {"organizer_id": organizer_id, "url": "https://hooks.example.com/in",
              "event_types": ["*"], "secret": "whsec_" + "A" * 32, **columns}
    names = ", ".join(values)
    places = ", ".join(f"${n}" for n in range(1, len(values) + 1))
    endpoint: uuid.UUID = await pool.fetchval(
        f"INSERT INTO webhook_endpoints ({names}) VALUES ({places}) RETURNING id",
        *values.values(),
    )
    return endpoint


async def insert_webhook_deliveries(
    pool: asyncpg.Pool, endpoint_id: uuid.UUID, count: int, status: str = "pending",
    due_seconds_ago: float = 0.0,
) -> None:
    """`count` ping deliveries to the endpoint: pending ones due `due_seconds_ago`
    seconds ago (negative: due later), or finished (succeeded, failed) then."""
    await pool.execute(
        """
        INSERT INTO webhook_deliveries (endpoint_id, message_id, event_type, body,
                                        occurred_at, status, attempts, next_attempt_at,
                                        finished_at)
        SELECT $1, 'msg_webhook.ping_' || gen_random_uuid(), 'webhook.ping', '{}', now(),
               $3, CASE WHEN $3 = 'pending' THEN 0 ELSE 1 END,
               CASE WHEN $3 = 'pending' THEN now() - make_interval(secs => $4) END,
               CASE WHEN $3 <> 'pending' THEN now() - make_interval(secs => $4) END
          FROM generate_series(1, $2)
        """,
        endpoint_id, count, status, due_seconds_ago,
    )
