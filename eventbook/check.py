"""The consistency check behind `eventbook check`: what should never be, listed."""

from __future__ import annotations

from typing import Any

import asyncpg

from eventbook import db


async def consistency_report(
    conn: asyncpg.Connection, outbox_age_s: float, confirmation_window_s: float
) -> dict[str, list[dict[str, Any]]]:
    """Every finding, by kind; all lists empty means the data is consistent."""
    return {
        "ticket_counts": [
            dict(row) for row in await conn.fetch(db.query("check_ticket_counts"))
        ],
        "stuck_outbox": [
            dict(row) for row in await conn.fetch(db.query("check_stuck_outbox"), outbox_age_s)
        ],
        "unconfirmed_bookings": [
            dict(row)
            for row in await conn.fetch(
                db.query("check_unconfirmed_bookings"), confirmation_window_s
            )
        ],
        "users_without_email_key": [
            dict(row) for row in await conn.fetch(db.query("check_users_without_email_key"))
        ],
    }
