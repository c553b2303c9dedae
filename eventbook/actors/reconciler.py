"""The reconciler: puts back the work a store lost, so that a booking answered 201 gets
its confirmation mail and an event change reaches every attendee even when Redis lost
stream entries (FLUSHALL, a restart without its files, a crash beyond its fsync policy,
a failover) or gave messages up during an outage.

A pass runs every EVENTBOOK_RECONCILE_INTERVAL_SECONDS, one at a time across every
process (a transaction-level advisory lock). It puts back what is older than
EVENTBOOK_RECONCILE_AFTER_SECONDS and that no outbox row and no stream entry the
consumer group has yet to acknowledge will do:

- confirmations: a booking still `pending` gets its booking_confirmed outbox row again;
- offers: a waiting-list offer still open (its entry offered, its hold live) whose mail
  was not sent gets its waitlist_offer outbox row again;
- announcements: an unfinished event change gets its expand message again (when not
  expanded yet), or a deliver message for each page not delivered (not when that
  message waits in the dead letters: replaying it is the operator's call);
- webhooks: a change of the last WEBHOOK_HORIZON_SECONDS that an endpoint wants but
  has no delivery of (a booking made or cancelled by its customer, a hold expired, an
  event change announced to attendees) gets its webhooks outbox row again, dated when
  the change happened (not when a webhooks message waits in the dead letters);
- dead letters given up on because a server was unreachable go back onto their stream.

PostgreSQL is read first and Redis after: the relay adds an entry to Redis before its
outbox row disappears, and a consumer records its effect before it acknowledges the
entry, so work that moves on between the two reads is seen where it went and never
taken for lost. Every effect is keyed in PostgreSQL (one mail per booking and kind, per
offer's hold, per attendee and change, per endpoint and webhook-id), so work put back
twice is still done once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import asyncpg
import redis.exceptions
import structlog

from eventbook import db, queues, topics
from eventbook.actors.notifications import CHANGE_KINDS, Page, deliver_entry
from eventbook.actors.stream import pause, stream_key
from eventbook.config import Config
from eventbook.connections import RedisClient
from eventbook.metrics import Metrics
from eventbook.outages import dead_letter_from_outage
from eventbook.webhook_payloads import MESSAGE_KEYS, message_id

log = structlog.get_logger(__name__)

RECONCILE_CONFIRMATIONS = db.query("reconcile_confirmations")
RECONCILE_ANNOUNCEMENTS = db.query("reconcile_announcements")
RECONCILE_REQUEUE_CONFIRMATIONS = db.query("reconcile_requeue_confirmations")
RECONCILE_OFFERS = db.query("reconcile_offers")
RECONCILE_REQUEUE_OFFERS = db.query("reconcile_requeue_offers")
RECONCILE_REQUEUE_EXPAND = db.query("reconcile_requeue_expand")
FANOUT_FINISH = db.query("fanout_finish")
RECONCILE_UNDONE_PAGES = db.query("reconcile_undone_pages")
RECONCILE_LOCK = db.query("reconcile_lock")
RECONCILE_WEBHOOKS = db.query("reconcile_webhooks")
RECONCILE_REQUEUE_WEBHOOKS = db.query("reconcile_requeue_webhooks")

# Bookings (and announcement rows) put back per pass; a pass that requeued a whole batch
# of bookings is followed by the next at once.
BATCH = 1000
# Stream entries read per XRANGE while looking for the messages of the candidates.
PAGE = 1000
# How far past EVENTBOOK_RECONCILE_AFTER_SECONDS changes are looked at for lost
# webhooks. A pass runs every EVENTBOOK_RECONCILE_INTERVAL_SECONDS, so a loss goes
# unseen only when no worker ran a pass for an hour. Each pass reads every change of
# the window on the events of organizers with endpoints: an hour bounds that work (a
# day of a hot sale would be millions of bookings per pass).
WEBHOOK_HORIZON_SECONDS = 3600.0

def new_request_id() -> str:
    """The request id of work the reconciler puts back, so operators can follow it."""
    return f"reconcile-{uuid.uuid4().hex}"


@dataclasses.dataclass
class Findings:
    """Work to put back (what a pass found), or put back (what it did), by kind. Each
    item is a JSON-ready dict naming its booking, offer's hold or event."""

    confirmations: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    offers: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    announcements: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    webhooks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    dead_letters: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"confirmations": len(self.confirmations), "offers": len(self.offers),
                "announcements": len(self.announcements), "webhooks": len(self.webhooks),
                "dead_letters": len(self.dead_letters)}

    def __bool__(self) -> bool:
        return any(self.counts().values())

    def as_dict(self) -> dict[str, list[dict[str, Any]]]:
        return {"confirmations": self.confirmations, "offers": self.offers,
                "announcements": self.announcements, "webhooks": self.webhooks,
                "dead_letters": self.dead_letters}


# -- reading Redis ---------------------------------------------------------------------


async def unacknowledged(
    client: RedisClient, stream: str, group: str
) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """The entries of `stream` that `group` may not have handled yet: from its oldest
    pending entry (or past the last one delivered, when none is pending) to the end,
    `PAGE` at a time. Entries before that were acknowledged. A group that does not exist
    (Redis lost it, or no consumer made it yet) will read the whole stream."""
    try:
        groups: Any = await client.xinfo_groups(stream)
    except redis.exceptions.ResponseError as exc:
        if "no such key" in str(exc).lower():
            return
        raise
    found = next((g for g in groups if g["name"] == group), None)
    start = "-"
    if found is not None:
        # After XINFO: what was delivered in between is read too, never skipped.
        summary: Any = await client.xpending(stream, group)
        start = summary["min"] if summary["pending"] else f"({found['last-delivered-id']}"
    while True:
        entries: Any = await client.xrange(stream, min=start, max="+", count=PAGE)
        for entry_id, fields in entries or []:
            yield entry_id, fields or {}
        if not entries or len(entries) < PAGE:
            return
        start = f"({entries[-1][0]}"


def _payload(fields: Mapping[str, str]) -> dict[str, Any]:
    try:
        value = json.loads(fields.get("payload") or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def _queued_confirmations(
    client: RedisClient, prefix: str, bookings: set[str], holds: set[str]
) -> tuple[set[str], set[str]]:
    """Which of `bookings` have a booking_confirmed entry, and which of the offers'
    `holds` a waitlist_offer entry, not yet acknowledged (one read of the stream)."""
    queued: tuple[set[str], set[str]] = (set(), set())
    wanted = {"booking_confirmed": ("booking_id", bookings, queued[0]),
              "waitlist_offer": ("hold_id", holds, queued[1])}
    async for _, fields in unacknowledged(client, stream_key(prefix, topics.CONFIRMATIONS),
                                          topics.CONFIRMATIONS):
        kind = wanted.get(fields.get("kind", ""))
        if kind is not None:
            key, candidates, found = kind
            value = str(_payload(fields).get(key))
            if value in candidates:
                found.add(value)
    return queued


def _announcement_message(fields: Mapping[str, Any]) -> tuple[str, int, int | None] | None:
    """What a notifications message is for: (event, version, None) for an expand
    message, (event, version, page) for a deliver one; None for anything else."""
    payload = _payload(fields)
    try:
        if fields.get("kind") in CHANGE_KINDS:
            return str(payload["event_id"]), int(payload["version"]), None
        if fields.get("kind") == "deliver":
            return str(payload["event_id"]), int(payload["version"]), int(payload["page"])
    except (KeyError, TypeError, ValueError):
        pass  # not a message the fan-out would act on either
    return None


async def _queued_announcements(
    client: RedisClient, prefix: str
) -> set[tuple[str, int, int | None]]:
    """The notifications messages not yet acknowledged (see _announcement_message)."""
    queued = set()
    async for _, fields in unacknowledged(client, stream_key(prefix, topics.NOTIFICATIONS),
                                          topics.NOTIFICATIONS):
        message = _announcement_message(fields)
        if message is not None:
            queued.add(message)
    return queued


def _webhook_message(fields: Mapping[str, Any]) -> str | None:
    """The webhook-id of a webhooks message (None for one that names no change)."""
    kind = fields.get("kind", "")
    if kind not in MESSAGE_KEYS:
        return None
    try:
        return message_id(kind, _payload(fields))
    except KeyError:
        return None


async def _queued_webhooks(client: RedisClient, prefix: str) -> set[str]:
    """The webhook-ids of the webhooks messages not yet acknowledged."""
    queued = set()
    async for _, fields in unacknowledged(client, stream_key(prefix, topics.WEBHOOKS),
                                          topics.WEBHOOKS):
        found = _webhook_message(fields)
        if found is not None:
            queued.add(found)
    return queued


# -- one pass --------------------------------------------------------------------------


async def find(
    conn: asyncpg.Connection, client: RedisClient, prefix: str,
    after_seconds: float, limit: int = BATCH,
) -> Findings:
    """What a pass would put back now (for `eventbook check` too). Reads PostgreSQL
    first, then the streams, then the dead letters; see the module's docstring for why.
    (A message dead-lettered between the last two reads is seen in its stream.)"""
    bookings = await conn.fetch(RECONCILE_CONFIRMATIONS, after_seconds, limit)
    offers = await conn.fetch(RECONCILE_OFFERS, after_seconds, limit)
    changes = await conn.fetch(RECONCILE_ANNOUNCEMENTS, after_seconds, limit)
    webhooks = await conn.fetch(RECONCILE_WEBHOOKS, after_seconds,
                                after_seconds + WEBHOOK_HORIZON_SECONDS, limit)
    found = Findings()
    if bookings or offers:
        queued, offered = await _queued_confirmations(
            client, prefix, {str(row["booking_id"]) for row in bookings},
            {str(row["hold_id"]) for row in offers},
        )
        found.confirmations = [
            {"booking_id": str(row["booking_id"]), "event_id": str(row["event_id"]),
             "created_at": row["created_at"].isoformat()}
            for row in bookings if str(row["booking_id"]) not in queued
        ]
        found.offers = [
            {"hold_id": str(row["hold_id"]), "entry_id": str(row["entry_id"]),
             "event_id": str(row["event_id"]), "offered_at": row["offered_at"].isoformat()}
            for row in offers if str(row["hold_id"]) not in offered
        ]
    messages = await _queued_announcements(client, prefix) if changes else set()
    webhook_messages = await _queued_webhooks(client, prefix) if webhooks else set()
    letters = await queues.dead_letters(client, prefix, limit=queues.DEAD_LETTER_SCAN_LIMIT)
    if webhooks:
        # As for announcements: a message given up on is the operator's to replay.
        webhook_messages |= {
            found for found in (_webhook_message(letter) for letter in letters
                                if letter["topic"] == topics.WEBHOOKS)
            if found is not None
        }
        found.webhooks = [
            {"kind": row["kind"], "message_id": row["message_id"],
             "event_id": str(row["event_id"]), "endpoint_id": str(row["endpoint_id"]),
             "changed_at": row["changed_at"].isoformat(), "payload": row["payload"]}
            for row in webhooks if row["message_id"] not in webhook_messages
        ]
    if changes:
        # A message given up on for its own sake is the operator's to replay (or purge):
        # resuming its announcement would retry it behind their back, again and again.
        for letter in letters:
            message = _announcement_message(letter)
            if letter["topic"] == topics.NOTIFICATIONS and message:
                messages.add(message)
        found.announcements = _announcements(changes, messages)
    found.dead_letters = [_letter(letter) for letter in letters if dead_letter_from_outage(letter)]
    return found


def _announcements(
    rows: Iterable[asyncpg.Record], messages: set[tuple[str, int, int | None]]
) -> list[dict[str, Any]]:
    """One item per announcement to resume, with its `action`: expand (not expanded),
    deliver (its pages not delivered that no message of `messages` is for), finish
    (expanded, every page delivered, yet not marked finished)."""
    items: dict[tuple[str, int], dict[str, Any]] = {}
    for row in rows:
        key = (str(row["event_id"]), row["version"])
        if (*key, None) in messages:
            continue  # its expand message is queued, or was given up on
        item = items.setdefault(key, {
            "event_id": key[0], "version": key[1], "kind": row["kind"],
            "changed_at": row["changed_at"].isoformat(),
            "action": "expand" if row["pages_total"] is None else "finish", "pages": [],
        })
        if row["page"] is None:
            continue
        item["action"] = "deliver"
        if (*key, row["page"]) not in messages:
            item["pages"].append({
                "page": row["page"],
                "after": str(row["after_user"]) if row["after_user"] else None,
                "upto": str(row["upto_user"]),
            })
    # An announcement whose every undone page has its message queued needs nothing.
    return [item for item in items.values() if item["action"] != "deliver" or item["pages"]]


def _letter(letter: Mapping[str, Any]) -> dict[str, Any]:
    payload = _payload(letter)
    item = {"id": letter["id"], "topic": letter["topic"], "kind": letter.get("kind", ""),
            "request_id": letter.get("request_id") or None,
            "cause": letter.get("cause") or None, "error": letter.get("error", "")}
    for key in ("booking_id", "event_id", "version"):
        if key in payload:
            item[key] = payload[key]
    return item


async def put_back(
    conn: asyncpg.Connection, client: RedisClient, prefix: str, found: Findings
) -> Findings:
    """Put back what `find` found, in `conn`'s transaction; what was put back. Each item
    is checked again as it is put back: one done meanwhile is left out."""
    done = Findings()
    if found.confirmations:
        request_ids = [new_request_id() for _ in found.confirmations]
        rows = await conn.fetch(
            RECONCILE_REQUEUE_CONFIRMATIONS,
            [item["booking_id"] for item in found.confirmations], request_ids,
        )
        requeued = {str(row["booking_id"]): row["request_id"] for row in rows}
        done.confirmations = [{**item, "request_id": requeued[item["booking_id"]]}
                              for item in found.confirmations
                              if item["booking_id"] in requeued]
    if found.offers:
        request_ids = [new_request_id() for _ in found.offers]
        rows = await conn.fetch(
            RECONCILE_REQUEUE_OFFERS, [item["hold_id"] for item in found.offers], request_ids,
        )
        requeued = {str(row["hold_id"]): row["request_id"] for row in rows}
        done.offers = [{**item, "request_id": requeued[item["hold_id"]]}
                       for item in found.offers if item["hold_id"] in requeued]
    if found.webhooks:
        request_ids = [new_request_id() for _ in found.webhooks]
        items = found.webhooks
        rows = await conn.fetch(
            RECONCILE_REQUEUE_WEBHOOKS, [item["kind"] for item in items],
            [item["payload"] for item in items],
            [dt.datetime.fromisoformat(item["changed_at"]) for item in items],
            [uuid.UUID(item["endpoint_id"]) for item in items],
            [item["message_id"] for item in items], request_ids,
        )
        requeued = {message_id(row["kind"], row["payload"]): row["request_id"]
                    for row in rows}
        done.webhooks = [{**item, "request_id": requeued[item["message_id"]]}
                         for item in items if item["message_id"] in requeued]
    for item in found.announcements:
        resumed = await _resume(conn, client, prefix, item)
        if resumed is not None:
            done.announcements.append(resumed)
    if found.dead_letters:
        replayed = {
            row["id"]: row["new_id"]
            for row in await queues.replay(client, prefix,
                                           [letter["id"] for letter in found.dead_letters])
        }
        done.dead_letters = [{**letter, "new_id": replayed[letter["id"]]}
                             for letter in found.dead_letters if letter["id"] in replayed]
    return done


async def _resume(
    conn: asyncpg.Connection, client: RedisClient, prefix: str, item: dict[str, Any]
) -> dict[str, Any] | None:
    """Resume one announcement; the item as done (with its request id and the pages
    handed on), or None when nothing was left to do."""
    event_id, version = uuid.UUID(item["event_id"]), item["version"]
    done = {**item, "request_id": new_request_id()}
    if item["action"] == "expand":
        queued = await conn.fetchval(RECONCILE_REQUEUE_EXPAND, event_id, version,
                                     done["request_id"])
        return done if queued is not None else None
    if item["action"] == "finish":
        finished = await conn.fetchrow(FANOUT_FINISH, event_id, version)
        return done if finished is not None else None
    undone = {row["page"] for row in await conn.fetch(
        RECONCILE_UNDONE_PAGES, event_id, version,
        [page["page"] for page in item["pages"]],
    )}
    done["pages"] = [page for page in item["pages"] if page["page"] in undone]
    if not done["pages"]:
        return None
    # Straight onto the stream, as the fan-out hands pages on: the outbox carries only
    # what a transaction of the API writes.
    changed_at = dt.datetime.fromisoformat(item["changed_at"])
    async with client.pipeline(transaction=False) as pipe:
        for page in done["pages"]:
            pipe.xadd(stream_key(prefix, topics.NOTIFICATIONS), deliver_entry(
                event_id, version,
                Page(page["page"], item["kind"], changed_at,
                     uuid.UUID(page["after"]) if page["after"] else None,
                     uuid.UUID(page["upto"])),
                done["request_id"],
            ))
        await pipe.execute()
    return done


async def reconcile(
    pool: asyncpg.Pool, client: RedisClient, prefix: str, after_seconds: float, *,
    metrics: Metrics | None = None, wait: bool = False,
) -> Findings | None:
    """One pass: find and put back, in one transaction holding the reconciler's lock.
    None when another pass holds it and `wait` is False (then that pass does the work)."""
    started = time.perf_counter()
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval(RECONCILE_LOCK, wait):
            log.debug("reconcile_skipped", reason="another pass is running")
            return None
        done = await put_back(conn, client, prefix,
                              await find(conn, client, prefix, after_seconds))
    for item in done.confirmations:
        log.info("confirmation_requeued", booking_id=item["booking_id"],
                 event_id=item["event_id"], request_id=item["request_id"])
    for item in done.offers:
        log.info("waitlist_offer_requeued", hold_id=item["hold_id"], entry_id=item["entry_id"],
                 event_id=item["event_id"], request_id=item["request_id"])
    for item in done.announcements:
        log.info("announcement_resumed", event_id=item["event_id"], version=item["version"],
                 kind=item["kind"], action=item["action"],
                 pages=[page["page"] for page in item["pages"]], request_id=item["request_id"])
    for item in done.webhooks:
        log.info("webhook_requeued", kind=item["kind"], webhook_message_id=item["message_id"],
                 event_id=item["event_id"], request_id=item["request_id"])
    for item in done.dead_letters:
        log.info("dead_letter_replayed", topic=item["topic"], dead_letter_id=item["id"],
                 message_id=item["new_id"], kind=item["kind"],
                 booking_id=item.get("booking_id"), event_id=item.get("event_id"),
                 request_id=item["request_id"], error=item["error"])
    if done:
        log.info("reconciled", **done.counts(),
                 duration_ms=round((time.perf_counter() - started) * 1000, 2))
    if metrics is not None:
        for kind, items in (("confirmation", done.confirmations), ("offer", done.offers),
                            ("announcement", done.announcements),
                            ("webhook", done.webhooks), ("dead_letter", done.dead_letters)):
            if items:
                metrics.reconciled(kind, len(items))
    return done


class Reconciler:
    """Runs a reconcile pass every `reconcile_interval_seconds` (see the module)."""

    name = "reconciler"

    def __init__(
        self, config: Config, pool: asyncpg.Pool, client: RedisClient,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.redis = client
        self.metrics = metrics or Metrics()

    async def run(self, stopping: asyncio.Event) -> None:
        log.info("reconciler_started", interval_s=self.config.reconcile_interval_seconds,
                 after_s=self.config.reconcile_after_seconds)
        while not stopping.is_set():
            done = await reconcile(self.pool, self.redis, self.config.redis_prefix,
                                   self.config.reconcile_after_seconds, metrics=self.metrics)
            if done is not None and BATCH <= max(
                len(done.confirmations), len(done.offers), len(done.webhooks)
            ):
                continue  # a whole batch lost: more are likely waiting
            await pause(self.config.reconcile_interval_seconds, stopping)
