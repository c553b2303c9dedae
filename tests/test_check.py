"""`eventbook check` reports nothing on consistent data and each kind of damage when present."""

from __future__ import annotations

import json

import asyncpg

from eventbook.config import Config
from tests.processes import environment, run
from tests.seed import insert_attendees, insert_event, insert_users


def check(config: Config, *args: str) -> tuple[int, dict]:
    result = run(["check", "--json", *args], environment(config))
    return result.returncode, json.loads(result.stdout)


async def consistent_world(pool: asyncpg.Pool):
    event = await insert_event(pool, capacity=10)
    await insert_attendees(pool, event, await insert_users(pool, 3), quantity=2)
    return event


async def test_consistent_data_reports_nothing(config: Config, pool: asyncpg.Pool) -> None:
    await consistent_world(pool)
    code, report = check(config)
    assert code == 0
    assert report == {"ok": True, "ticket_counts": [], "ticket_type_counts": [],
                      "stuck_outbox": [],
                      "unconfirmed_bookings": [], "users_without_email_key": [],
                      "confirmations_to_requeue": [], "announcements_to_resume": [],
                      "dead_letters_to_replay": []}


async def test_remaining_tickets_that_disagree_with_bookings_are_reported(
    config: Config, pool: asyncpg.Pool
) -> None:
    event = await consistent_world(pool)
    await pool.execute("UPDATE events SET available_tickets = 5 WHERE id = $1", event)
    code, report = check(config)
    assert code == 1
    [finding] = report["ticket_counts"]
    assert finding["id"] == str(event)
    assert (finding["available_tickets"], finding["expected_available"]) == (5, 4)


async def test_outbox_rows_stuck_too_long_are_reported(config: Config, pool: asyncpg.Pool) -> None:
    await pool.execute(
        "INSERT INTO outbox (topic, kind, payload, created_at)"
        " VALUES ('confirmations', 'booking_confirmed', '{}', now() - interval '10 minutes')"
    )
    await pool.execute(
        "INSERT INTO outbox (topic, kind, payload) VALUES ('confirmations', 'x', '{}')"
    )
    code, report = check(config, "--outbox-age", "60")
    assert code == 1
    assert [row["kind"] for row in report["stuck_outbox"]] == ["booking_confirmed"]


async def test_bookings_unconfirmed_after_the_window_are_reported(
    config: Config, pool: asyncpg.Pool
) -> None:
    event = await consistent_world(pool)
    [late] = await insert_users(pool, 1)
    await insert_attendees(pool, event, [late])
    await pool.execute(
        "UPDATE bookings SET confirmation_status = 'pending', confirmed_at = NULL,"
        " created_at = now() - interval '1 hour' WHERE user_id = $1", late,
    )
    code, report = check(config, "--confirmation-window", "600")
    assert code == 1
    assert [row["user_id"] for row in report["unconfirmed_bookings"]] == [str(late)]
