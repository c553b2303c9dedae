"""`eventbook check` reports nothing on consistent data and each kind of damage when present."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import asyncpg

from eventbook.config import Config
from tests.processes import environment, run
from tests.seed import (
    insert_attendees,
    insert_event,
    insert_users,
    insert_webhook_deliveries,
    insert_webhook_endpoint,
)


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
                      "waitlist_tickets_on_sale": [], "waitlist_reserve_unwaited": [],
                      "waitlist_offers_missing": [], "waitlist_counts": [],
                      "waitlist_order": [], "waitlist_offer_holds": [],
                      "stuck_outbox": [],
                      "unconfirmed_bookings": [], "users_without_email_key": [],
                      "webhook_deliveries_overdue": [],
                      "webhook_endpoint_paused_unnotified": [],
                      "confirmations_to_requeue": [], "offers_to_requeue": [],
                      "announcements_to_resume": [], "webhooks_to_requeue": [],
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


async def test_webhook_deliveries_due_too_long_at_enabled_endpoints_are_reported(
    config: Config, pool: asyncpg.Pool
) -> None:
    """Not those due a moment ago, nor those of a paused endpoint (they wait for it)."""
    late = await insert_webhook_endpoint(pool)
    await insert_webhook_deliveries(pool, late, 1, due_seconds_ago=600)
    await insert_webhook_deliveries(pool, late, 1, due_seconds_ago=10)
    await insert_webhook_deliveries(pool, late, 1, status="succeeded", due_seconds_ago=600)
    paused = await insert_webhook_endpoint(pool, status="paused", paused_reason="owner")
    await insert_webhook_deliveries(pool, paused, 1, due_seconds_ago=3600)

    code, report = check(config, "--webhook-due", "60")
    assert code == 1
    [finding] = report["webhook_deliveries_overdue"]
    assert finding["endpoint_id"] == str(late) and 600 <= finding["due_seconds"] < 660
    code, report = check(config, "--webhook-due", "3600")
    assert code == 0 and report["webhook_deliveries_overdue"] == []


async def test_an_endpoint_paused_for_failing_whose_owner_was_never_mailed_is_reported(
    config: Config, pool: asyncpg.Pool
) -> None:
    """Not one whose owner was mailed, one paused a moment ago, nor one its owner paused."""
    def paused(minutes: int, **columns: Any) -> dict[str, Any]:
        return {"status": "paused", "paused_reason": "failing", "consecutive_failures": 10,
                "paused_at": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes),
                **columns}

    unnotified = await insert_webhook_endpoint(pool, **paused(20))
    await insert_webhook_endpoint(pool, **paused(20, pause_notified_at=dt.datetime.now(dt.UTC)))
    await insert_webhook_endpoint(pool, **paused(1))
    await insert_webhook_endpoint(pool, **paused(20, paused_reason="owner"))

    code, report = check(config, "--confirmation-window", "600")
    assert code == 1
    [finding] = report["webhook_endpoint_paused_unnotified"]
    assert finding["id"] == str(unnotified) and finding["consecutive_failures"] == 10
    text = run(["check", "--confirmation-window", "600"], environment(config))
    assert "webhook endpoints paused for failing more than 600 s ago whose owner was not"\
        " mailed: 1" in text.stdout


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


# -- the waiting list -------------------------------------------------------------------


async def waitlist_world(pool: asyncpg.Pool) -> dict[str, Any]:
    """A sold-out event of 4 tickets whose waiting list went through every path the
    stored procedures take: the first's offer (2 tickets) expired, the second accepted
    theirs, the third declined, the fourth holds an offer, the fifth wants 3 and waits
    while the one ticket back is reserved for them, the sixth waits behind."""
    event = await insert_event(pool, capacity=4)
    kind = await pool.fetchval("SELECT id FROM ticket_types WHERE event_id = $1", event)
    buyers = await insert_users(pool, 4)
    await insert_attendees(pool, event, buyers)
    users = await insert_users(pool, 6)
    entries = {}
    for name, user, quantity in zip("abcdef", users, (2, 1, 1, 1, 3, 1), strict=True):
        row = await pool.fetchrow("SELECT outcome, (entry).id FROM join_waitlist($1, NULL, $2, $3)",
                                  event, user, quantity)
        assert row["outcome"] == "created"
        entries[name] = (row["id"], user)

    async def cancel(buyer: uuid.UUID) -> None:
        booking = await pool.fetchval("SELECT id FROM bookings WHERE user_id = $1", buyer)
        assert await pool.fetchval("SELECT outcome FROM cancel_booking($1, $2, 'test')",
                                   booking, buyer) == "cancelled"

    async def hold_of(name: str) -> uuid.UUID:
        return await pool.fetchval("SELECT hold_id FROM waitlist_entries WHERE id = $1",
                                   entries[name][0])

    await cancel(buyers[0])
    await cancel(buyers[1])
    await pool.execute("UPDATE holds SET expires_at = now() - interval '1 second'"
                       " WHERE id = $1", await hold_of("a"))
    await pool.execute("SELECT expire_holds(100)")
    assert await pool.fetchval("SELECT outcome FROM confirm_hold($1, $2, NULL, 'test')",
                               await hold_of("b"), entries["b"][1]) == "confirmed"
    assert await pool.fetchval("SELECT outcome FROM leave_waitlist($1, $2)",
                               *entries["c"]) == "declined"
    await cancel(buyers[2])
    statuses = dict(await pool.fetch("SELECT id, status FROM waitlist_entries"))
    assert [statuses[entries[name][0]] for name in "abcdef"] == [
        "expired", "accepted", "declined", "offered", "waiting", "waiting"]
    assert await pool.fetchval("SELECT reserved FROM ticket_types WHERE id = $1", kind) == 1
    return {"event": event, "type": kind, "hold": await hold_of("d"),
            **{name: entry for name, (entry, _) in entries.items()}}


async def test_a_waiting_list_in_every_state_reports_nothing(
    config: Config, pool: asyncpg.Pool
) -> None:
    await waitlist_world(pool)
    code, report = check(config)
    assert {kind: rows for kind, rows in report.items() if rows and kind != "ok"} == {}
    assert code == 0


async def test_tickets_the_public_can_book_while_someone_waits_are_reported(
    config: Config, pool: asyncpg.Pool
) -> None:
    world = await waitlist_world(pool)
    await pool.execute("UPDATE ticket_types SET reserved = 0, taken = taken - 1 WHERE id = $1",
                       world["type"])
    await pool.execute("UPDATE events SET available_tickets = 1 WHERE id = $1", world["event"])
    code, report = check(config)
    assert code == 1
    [finding] = report["waitlist_tickets_on_sale"]
    assert (finding["id"], finding["bookable"], finding["waiting"]) == (str(world["type"]), 1, 2)


async def test_tickets_reserved_when_nobody_waits_are_reported(
    config: Config, pool: asyncpg.Pool
) -> None:
    world = await waitlist_world(pool)
    await pool.execute("UPDATE waitlist_entries SET status = 'left', ended_at = now()"
                       " WHERE status = 'waiting'")
    await pool.execute("UPDATE ticket_types SET waiting = 0 WHERE id = $1", world["type"])
    code, report = check(config)
    assert code == 1
    [finding] = report["waitlist_reserve_unwaited"]
    assert (finding["id"], finding["reserved"]) == (str(world["type"]), 1)
    assert report["waitlist_tickets_on_sale"] == []


async def test_a_reserve_that_covers_the_next_in_line_is_a_missing_offer(
    config: Config, pool: asyncpg.Pool
) -> None:
    world = await waitlist_world(pool)
    await pool.execute("UPDATE waitlist_entries SET quantity = 1 WHERE id = $1", world["e"])
    code, report = check(config)
    assert code == 1
    [finding] = report["waitlist_offers_missing"]
    assert (finding["id"], finding["entry_id"]) == (str(world["type"]), str(world["e"]))


async def test_a_reserve_the_first_fitting_entry_could_skip_ahead_for_is_a_missing_offer(
    config: Config, pool: asyncpg.Pool
) -> None:
    world = await waitlist_world(pool)
    code, report = check(config)
    assert code == 0, "nobody skips ahead of the one who wants 3"
    await pool.execute("UPDATE ticket_types SET waitlist_allow_skip = true WHERE id = $1",
                       world["type"])
    code, report = check(config)
    assert code == 1
    [finding] = report["waitlist_offers_missing"]
    assert (finding["id"], finding["entry_id"]) == (str(world["type"]), str(world["f"]))


async def test_a_waiting_list_length_that_disagrees_with_its_entries_is_reported(
    config: Config, pool: asyncpg.Pool
) -> None:
    world = await waitlist_world(pool)
    await pool.execute("UPDATE ticket_types SET waiting = 5 WHERE id = $1", world["type"])
    code, report = check(config)
    assert code == 1
    [finding] = report["waitlist_counts"]
    assert (finding["waiting"], finding["expected_waiting"]) == (5, 2)


async def test_an_entry_passed_over_by_a_later_ones_offer_is_reported_unless_skipping_is_on(
    config: Config, pool: asyncpg.Pool
) -> None:
    world = await waitlist_world(pool)
    # The one who declined is back in the queue, ahead of the offer the fourth holds.
    await pool.execute("UPDATE waitlist_entries SET status = 'waiting', hold_id = NULL,"
                       " offered_at = NULL, ended_at = NULL WHERE id = $1", world["c"])
    await pool.execute("UPDATE ticket_types SET waiting = 3 WHERE id = $1", world["type"])
    code, report = check(config)
    assert code == 1
    [finding] = report["waitlist_order"]
    assert (finding["id"], finding["offered_entry_id"]) == (str(world["c"]), str(world["d"]))

    await pool.execute("UPDATE ticket_types SET waitlist_allow_skip = true WHERE id = $1",
                       world["type"])
    _, report = check(config)
    assert report["waitlist_order"] == []


async def test_an_offer_whose_hold_says_otherwise_is_reported(
    config: Config, pool: asyncpg.Pool
) -> None:
    world = await waitlist_world(pool)
    await pool.execute("UPDATE holds SET status = 'released', ended_at = now() WHERE id = $1",
                       world["hold"])
    await pool.execute("UPDATE waitlist_entries SET status = 'accepted', ended_at = now()"
                       " WHERE id = $1", world["a"])
    code, report = check(config)
    assert code == 1
    findings = {row["id"]: (row["hold_status"], row["expected_hold_status"])
                for row in report["waitlist_offer_holds"]}
    assert findings == {str(world["d"]): ("released", "held"),
                        str(world["a"]): ("expired", "confirmed")}
