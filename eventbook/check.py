"""The consistency check behind `eventbook check`: what should never be, listed, and
what the reconciler would put back now."""

from __future__ import annotations

from typing import Any

import asyncpg

from eventbook import db
from eventbook.actors.reconciler import find
from eventbook.connections import RedisClient

# Rows listed per kind of finding.
REPORT_LIMIT = 100
# A webhook delivery due this long without an attempt is late (`check --webhook-due`).
WEBHOOK_DUE_S = 60.0

TICKET_COUNTS = db.query("check_ticket_counts")
TICKET_TYPE_COUNTS = db.query("check_ticket_type_counts")
STUCK_OUTBOX = db.query("check_stuck_outbox")
UNCONFIRMED_BOOKINGS = db.query("check_unconfirmed_bookings")
USERS_WITHOUT_EMAIL_KEY = db.query("check_users_without_email_key")
WEBHOOKS_OVERDUE = db.query("check_webhooks_overdue")
WEBHOOKS_PAUSED_UNNOTIFIED = db.query("check_webhooks_paused_unnotified")
# The waiting list: the tickets that came back are on sale, offered, or sold, in order.
WAITLIST_CHECKS = {
    "waitlist_tickets_on_sale": db.query("check_waitlist_on_sale"),
    "waitlist_reserve_unwaited": db.query("check_waitlist_reserve_unwaited"),
    "waitlist_offers_missing": db.query("check_waitlist_offers_missing"),
    "waitlist_counts": db.query("check_waitlist_counts"),
    "waitlist_order": db.query("check_waitlist_order"),
    "waitlist_offer_holds": db.query("check_waitlist_offer_holds"),
}


async def consistency_report(
    conn: asyncpg.Connection, outbox_age_s: float, confirmation_window_s: float,
    webhook_due_s: float = WEBHOOK_DUE_S,
) -> dict[str, list[dict[str, Any]]]:
    """Every finding, by kind; all lists empty means the data is consistent. Webhook
    deliveries count as late `webhook_due_s` after they fell due; an owner's mail that
    their endpoint was paused, as a booking's confirmation, `confirmation_window_s`."""
    report = {
        "ticket_counts": [
            dict(row) for row in await conn.fetch(TICKET_COUNTS, REPORT_LIMIT)
        ],
        "ticket_type_counts": [
            dict(row) for row in await conn.fetch(TICKET_TYPE_COUNTS, REPORT_LIMIT)
        ],
    }
    for kind, query in WAITLIST_CHECKS.items():
        report[kind] = [dict(row) for row in await conn.fetch(query, REPORT_LIMIT)]
    return report | {
        "stuck_outbox": [
            dict(row) for row in await conn.fetch(STUCK_OUTBOX, outbox_age_s, REPORT_LIMIT)
        ],
        "unconfirmed_bookings": [
            dict(row) for row in await conn.fetch(
                UNCONFIRMED_BOOKINGS, confirmation_window_s, REPORT_LIMIT
            )
        ],
        "users_without_email_key": [
            dict(row) for row in await conn.fetch(USERS_WITHOUT_EMAIL_KEY, REPORT_LIMIT)
        ],
        "webhook_deliveries_overdue": [
            dict(row) for row in await conn.fetch(WEBHOOKS_OVERDUE, webhook_due_s, REPORT_LIMIT)
        ],
        "webhook_endpoint_paused_unnotified": [
            dict(row) for row in await conn.fetch(
                WEBHOOKS_PAUSED_UNNOTIFIED, confirmation_window_s, REPORT_LIMIT
            )
        ],
    }


async def reconciliation_report(
    conn: asyncpg.Connection, client: RedisClient, prefix: str,
    reconcile_after_s: float,
) -> dict[str, list[dict[str, Any]]]:
    """What a reconciler pass would put back now, by kind; all lists empty means no
    queue lost anything (that is older than `reconcile_after_s`)."""
    work = await find(conn, client, prefix, reconcile_after_s, limit=REPORT_LIMIT)
    return {
        "confirmations_to_requeue": work.confirmations,
        "offers_to_requeue": work.offers,
        "announcements_to_resume": work.announcements,
        "webhooks_to_requeue": work.webhooks,
        "dead_letters_to_replay": work.dead_letters[:REPORT_LIMIT],
    }
