"""What must hold after every fault, checked the way an operator would: `eventbook check`
and `eventbook queues`, plus the mails recorded for the bookings a test made."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Collection
from typing import Any

import asyncpg

from eventbook.config import Config
from tests.client import eventually
from tests.processes import environment, run


def assert_check_reports_nothing(
    config: Config, *, outbox_age: float = 0, confirmation_window: float = 0,
    reconcile_after: float = 0,
) -> None:
    """`eventbook check --json` finds nothing. The defaults (0 s) leave no slack at all:
    no outbox row left, no booking still waiting for its confirmation, nothing for the
    reconciler to put back."""
    result = run(
        ["check", "--json", "--outbox-age", str(outbox_age),
         "--confirmation-window", str(confirmation_window),
         "--reconcile-after", str(reconcile_after)],
        environment(config),
    )
    report = json.loads(result.stdout)
    assert report["ok"] and result.returncode == 0, report


def queues(config: Config) -> list[dict[str, Any]]:
    """`eventbook queues --json`: one row per stream and consumer group."""
    result = run(["queues", "--json"], environment(config))
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout)["streams"])


def every_message_handled(config: Config) -> bool:
    return all((row["pending"], row["lag"], row["dead_letters"]) == (0, 0, 0)
               for row in queues(config))


async def wait_until_drained(config: Config, timeout: float = 60) -> None:
    """Wait, while a worker runs, until every stream is read and acknowledged.

    Every booking can be confirmed while a message is still pending on a consumer that
    was killed after doing its work but before acknowledging it; a live worker claims it
    once it has been idle for claim_idle_ms. Stopping the workers before that leaves it
    pending (safely: the next worker claims it), but not settled.
    """
    await eventually(lambda: asyncio.to_thread(every_message_handled, config),
                     timeout=timeout, interval=0.5)


def assert_every_message_handled(config: Config) -> None:
    """Every group has read every entry of its stream and acknowledged it; nothing was
    given up on (no dead letter)."""
    for row in queues(config):
        assert (row["pending"], row["lag"], row["dead_letters"]) == (0, 0, 0), row


async def confirmation_states(
    pool: asyncpg.Pool, bookings: Collection[uuid.UUID]
) -> dict[uuid.UUID, tuple[str, int, int]]:
    """Per booking: its confirmation_status, its booking_confirmed mails recorded, and
    how many of those are stamped sent."""
    rows = await pool.fetch(
        """
        SELECT b.id, b.confirmation_status,
               count(n.id) AS recorded, count(n.sent_at) AS sent
          FROM bookings b
          LEFT JOIN notifications n ON n.booking_id = b.id AND n.kind = 'booking_confirmed'
         WHERE b.id = ANY($1::uuid[])
         GROUP BY b.id
        """,
        list(bookings),
    )
    return {row["id"]: (row["confirmation_status"], row["recorded"], row["sent"])
            for row in rows}


async def all_confirmed(pool: asyncpg.Pool, bookings: Collection[uuid.UUID]) -> bool:
    states = await confirmation_states(pool, bookings)
    return len(states) == len(bookings) and all(s == "sent" for s, _, _ in states.values())


async def assert_each_confirmed_once(
    pool: asyncpg.Pool, bookings: Collection[uuid.UUID]
) -> None:
    """Each booking exists, is marked sent, and has exactly one booking_confirmed mail,
    stamped sent."""
    assert bookings, "no bookings to check"
    states = await confirmation_states(pool, bookings)
    assert set(states) == set(bookings)
    wrong = {booking: state for booking, state in states.items() if state != ("sent", 1, 1)}
    assert wrong == {}


async def assert_confirmed_once(
    pool: asyncpg.Pool, bookings: Collection[uuid.UUID], timeout: float = 60
) -> None:
    """Wait until every booking is confirmed, then check each has exactly one mail."""
    await eventually(lambda: all_confirmed(pool, bookings), timeout=timeout, interval=0.1)
    await assert_each_confirmed_once(pool, bookings)


def assert_settled(config: Config) -> None:
    """After the processes stopped: nothing pending, lagging or dead-lettered, and
    `eventbook check` finds nothing."""
    assert_every_message_handled(config)
    assert_check_reports_nothing(config)
