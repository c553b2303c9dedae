"""The schema itself refuses what must never be: each invariant the code relies on is
attacked here directly in SQL, as a bug in Python would, and the database says no.

The one invariant that is not a constraint, remaining tickets agreeing with the sum of
the event's bookings, would cost a scan of the event's bookings per booking; `eventbook
check` reports any drift instead (tests/test_check.py).
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from tests.seed import insert_attendees, insert_event, insert_users


@pytest.fixture
async def event(pool: asyncpg.Pool) -> uuid.UUID:
    return await insert_event(pool, capacity=10)


@pytest.fixture
async def booking(pool: asyncpg.Pool, event: uuid.UUID) -> asyncpg.Record:
    [user] = await insert_users(pool, 1)
    await insert_attendees(pool, event, [user])
    row = await pool.fetchrow("SELECT * FROM bookings WHERE user_id = $1", user)
    assert row is not None
    return row


async def refused(pool: asyncpg.Pool, constraint: str, sql: str, *args: object) -> None:
    """`sql` fails on `constraint` and changes nothing."""
    with pytest.raises(asyncpg.IntegrityConstraintViolationError) as error:
        await pool.execute(sql, *args)
    assert error.value.constraint_name == constraint, error.value


# -- remaining tickets between 0 and capacity ----------------------------------------------


async def test_remaining_tickets_never_go_below_zero(pool: asyncpg.Pool, event) -> None:
    await refused(pool, "events_tickets_in_range",
                  "UPDATE events SET available_tickets = available_tickets - 11 WHERE id = $1",
                  event)


async def test_remaining_tickets_never_exceed_capacity(pool: asyncpg.Pool, event) -> None:
    await refused(pool, "events_tickets_in_range",
                  "UPDATE events SET available_tickets = available_tickets + 1 WHERE id = $1",
                  event)
    await refused(pool, "events_tickets_in_range",
                  "UPDATE events SET capacity = 9 WHERE id = $1", event)


async def test_naive_concurrent_decrements_still_cannot_oversell(
    pool: asyncpg.Pool, event: uuid.UUID
) -> None:
    """Thirty transactions take a ticket each with no check at all, as a buggy caller
    would: the row lock orders them and the constraint stops the eleventh."""

    async def take_one() -> bool:
        try:
            await pool.execute(
                "UPDATE events SET available_tickets = available_tickets - 1 WHERE id = $1",
                event,
            )
        except asyncpg.CheckViolationError:
            return False
        return True

    taken = await asyncio.gather(*(take_one() for _ in range(30)))
    assert sum(taken) == 10
    assert await pool.fetchval("SELECT available_tickets FROM events WHERE id = $1", event) == 0


# -- the per-customer cap ------------------------------------------------------------------


async def test_a_per_customer_cap_stays_in_range(pool: asyncpg.Pool, event) -> None:
    await refused(pool, "events_customer_cap_in_range",
                  "UPDATE events SET max_tickets_per_customer = 1000001 WHERE id = $1", event)


async def test_a_per_customer_cap_fits_a_booking(pool: asyncpg.Pool, event) -> None:
    await refused(pool, "events_customer_cap_fits_a_booking",
                  "UPDATE events SET max_tickets_per_customer = 4, max_tickets_per_booking = 5"
                  " WHERE id = $1", event)


# -- one booking per customer and Idempotency-Key ------------------------------------------


async def test_one_booking_per_customer_and_idempotency_key(
    pool: asyncpg.Pool, event: uuid.UUID
) -> None:
    [user] = await insert_users(pool, 1)
    insert = ("INSERT INTO bookings (event_id, user_id, quantity, idempotency_key)"
              " VALUES ($1, $2, 1, 'order-1')")
    await pool.execute(insert, event, user)
    await refused(pool, "bookings_idempotency_key", insert, event, user)


async def test_a_booking_takes_1_to_100_tickets(pool: asyncpg.Pool, event: uuid.UUID) -> None:
    [user] = await insert_users(pool, 1)
    for quantity in (0, 101):
        await refused(pool, "bookings_quantity_check",
                      "INSERT INTO bookings (event_id, user_id, quantity) VALUES ($1, $2, $3)",
                      event, user, quantity)


async def test_a_cancelled_booking_says_when_and_why(pool: asyncpg.Pool, booking) -> None:
    await refused(pool, "bookings_cancelled_consistent",
                  "UPDATE bookings SET status = 'cancelled' WHERE id = $1", booking["id"])


async def test_confirmed_at_is_set_exactly_when_the_confirmation_is_sent(
    pool: asyncpg.Pool, booking
) -> None:
    await refused(pool, "bookings_confirmed_when_sent",
                  "UPDATE bookings SET confirmed_at = NULL WHERE id = $1", booking["id"])
    await refused(pool, "bookings_confirmed_when_sent",
                  "UPDATE bookings SET confirmation_status = 'pending' WHERE id = $1",
                  booking["id"])


# -- one mail per key --------------------------------------------------------------------


RECORD_BOOKING_MAIL = """
INSERT INTO notifications (user_id, kind, event_id, booking_id, recipient, subject, body)
VALUES ($1, $2, $3, $4, 'a@example.com', 's', 'b')
"""
RECORD_EVENT_MAIL = """
INSERT INTO notifications (user_id, kind, event_id, event_version, booking_id, recipient,
                           subject, body)
VALUES ($1, $2, $3, $4, $5, 'a@example.com', 's', 'b')
"""


async def test_one_booking_mail_per_booking_and_kind(pool: asyncpg.Pool, booking) -> None:
    args = (booking["user_id"], "booking_confirmed", booking["event_id"], booking["id"])
    await pool.execute(RECORD_BOOKING_MAIL, *args)
    await refused(pool, "notifications_booking_once", RECORD_BOOKING_MAIL, *args)
    # Another kind for the same booking is another mail.
    await pool.execute(RECORD_BOOKING_MAIL, *args[:1], "booking_cancelled", *args[2:])


async def test_one_event_mail_per_attendee_version_and_kind(pool: asyncpg.Pool, booking) -> None:
    args = (booking["user_id"], "event_updated", booking["event_id"], 2, None)
    await pool.execute(RECORD_EVENT_MAIL, *args)
    await refused(pool, "notifications_event_once", RECORD_EVENT_MAIL, *args)
    await pool.execute(RECORD_EVENT_MAIL, *args[:3], 3, None)


async def test_a_mail_cannot_escape_its_unique_key(pool: asyncpg.Pool, booking) -> None:
    """The unique indexes are partial (booking mails have a booking, event mails not),
    so a row keyed the other way would slip past both: the kind decides the key."""
    user, event_id = booking["user_id"], booking["event_id"]
    await refused(pool, "notifications_key_matches_kind", RECORD_EVENT_MAIL,
                  user, "booking_confirmed", event_id, 1, None)
    await refused(pool, "notifications_key_matches_kind", RECORD_EVENT_MAIL,
                  user, "event_updated", event_id, 2, booking["id"])
    await refused(pool, "notifications_key_matches_kind", RECORD_EVENT_MAIL,
                  user, "event_cancelled", event_id, None, None)


# -- a user is found by the key of its e-mail address ---------------------------------------


async def test_a_user_has_an_email_key_and_no_other_user_has_it(pool: asyncpg.Pool) -> None:
    insert = ("INSERT INTO users (email, email_key, name, role, password_hash)"
              " VALUES ($1, $2, 'X', 'customer', '!')")
    await refused(pool, "users_email_key_present", insert, "x@example.com", None)
    await pool.execute(insert, "x@example.com", "x@example.com")
    await refused(pool, "users_email_key", insert, "X@example.com", "x@example.com")
