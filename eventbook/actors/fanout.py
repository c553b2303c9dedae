"""The notifications actor: tells every attendee of an event that it changed.

One change can be for 100,000 attendees, so it is done in two steps through the same
stream and consumer group, which lets every worker share one big event:

- expand (messages `event_updated` / `event_cancelled` from the outbox): page through
  the attendees by user id (keyset, never all in memory) and hand each page on as a
  `deliver` message; the expansion cursor is recorded after each page, so a crash
  resumes where it was.
- deliver: send the page's mails with bounded concurrency and record them in batches.
  The unique key (event, version, user, kind) makes a redelivered page skip everyone
  already told. Before each batch the page checks whether a newer change exists; if it
  does, it stops: that change tells everyone, with the current details (coalescing).

At least once, recorded once: a crash can resend at most the mails in flight at that
moment; it never records one twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from typing import Any

import asyncpg
import redis.asyncio
import structlog
from redis.typing import EncodableT, FieldT

from eventbook import db
from eventbook.actors.mailer import Mailer, MailError
from eventbook.actors.stream import Message, StreamActor
from eventbook.config import Config

log = structlog.get_logger(__name__)

CHANGE_KINDS = ("event_updated", "event_cancelled")
MAIL_ATTEMPTS = 3


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%A %d %B %Y, %H:%M %Z") if value else "not set"


def render(kind: str, event: asyncpg.Record, name: str) -> tuple[str, str]:
    """Subject and body of an announcement mail, from the event as it is now."""
    if kind == "event_cancelled":
        return (
            f"Cancelled: {event['title']}",
            f"Hello {name},\n\n{event['title']}, planned for {_when(event['starts_at'])}, "
            "is cancelled. Your booking for it is cancelled too.\n\neventbook\n",
        )
    return (
        f"Changed: {event['title']}",
        f"Hello {name},\n\n{event['title']}, which you have booked, has changed. "
        f"The current details:\n\n"
        f"  Starts: {_when(event['starts_at'])}\n"
        f"  Ends:   {_when(event['ends_at'])}\n"
        f"  Venue:  {event['venue'] or 'not set'}\n\neventbook\n",
    )


def deliver_entry(
    event_id: uuid.UUID, version: int, kind: str, changed_at: dt.datetime, page: int,
    after: uuid.UUID | None, upto: uuid.UUID, request_id: str | None,
) -> dict[FieldT, EncodableT]:
    """The stream entry that hands one page of attendees (after, upto] to the senders."""
    return {
        "kind": "deliver",
        "payload": json.dumps({
            "event_id": str(event_id), "version": version, "kind": kind,
            "changed_at": changed_at.isoformat(), "page": page,
            "after": str(after) if after else None, "upto": str(upto),
        }),
        "request_id": request_id or "",
    }


class Fanout(StreamActor):
    name = "notifications"
    topic = "notifications"
    concurrency = 8  # pages in hand at once; mails in flight are bounded separately

    def __init__(
        self,
        config: Config,
        pool: asyncpg.Pool,
        client: redis.asyncio.Redis,
        mailer: Mailer,
        *,
        page_size: int = 1000,
        batch_size: int = 250,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, client, **kwargs)
        self.pool = pool
        self.mailer = mailer
        self.page_size = page_size
        self.batch_size = batch_size
        self.sending = asyncio.Semaphore(config.fanout_concurrency)

    async def handle(self, message: Message) -> None:
        payload = message.payload
        event_id = uuid.UUID(payload["event_id"])
        version = int(payload["version"])
        if message.kind in CHANGE_KINDS:
            with self.metrics.fanout_running():
                await self.expand(event_id, version, message)
        elif message.kind == "deliver":
            await self.deliver(event_id, version, payload)
        else:
            raise ValueError(f"unknown message kind {message.kind!r}")

    # -- expand ----------------------------------------------------------------------

    async def expand(self, event_id: uuid.UUID, version: int, message: Message) -> None:
        announcement = await self.pool.fetchrow(
            "UPDATE announcements SET started_at = coalesce(started_at, now())"
            " WHERE event_id = $1 AND version = $2 RETURNING *",
            event_id, version,
        )
        if announcement is None:
            raise LookupError(f"no announcement for event {event_id} version {version}")
        if announcement["pages_total"] is not None:
            return  # expanded already: this is a redelivery
        kind, changed_at = announcement["kind"], announcement["changed_at"]
        if announcement["recipients_total"] is None:
            total = await self.pool.fetchval(
                db.query("fanout_count_recipients"), event_id, kind, changed_at
            )
            await self.pool.execute(
                "UPDATE announcements SET recipients_total = $3"
                " WHERE event_id = $1 AND version = $2",
                event_id, version, total,
            )
            log.info("fanout_started", event_id=str(event_id), version=version, kind=kind,
                     recipients=total)
        cursor: uuid.UUID | None = announcement["expanded_through"]
        page = await self.pool.fetchval(
            "SELECT count(*) FROM announcement_pages WHERE event_id = $1 AND version = $2",
            event_id, version,
        )
        while True:
            users = [row["user_id"] for row in await self.pool.fetch(
                db.query("fanout_next_page"), event_id, kind, changed_at, cursor, self.page_size
            )]
            if not users:
                break
            # Hand the page on first, then record it: a crash in between hands the same
            # page on again, which deliver takes as a no-op for whoever was already told.
            await self.redis.xadd(self.stream, deliver_entry(
                event_id, version, kind, changed_at, page, cursor, users[-1],
                message.request_id,
            ))
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "INSERT INTO announcement_pages"
                    " (event_id, version, page, after_user, upto_user, recipients)"
                    " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    event_id, version, page, cursor, users[-1], len(users),
                )
                await conn.execute(
                    "UPDATE announcements SET expanded_through = $3"
                    " WHERE event_id = $1 AND version = $2",
                    event_id, version, users[-1],
                )
            cursor = users[-1]
            page += 1
        await self.pool.execute(
            "UPDATE announcements SET pages_total = $3 WHERE event_id = $1 AND version = $2",
            event_id, version, page,
        )
        log.info("fanout_expanded", event_id=str(event_id), version=version, pages=page)
        await self.finish_if_done(event_id, version)

    # -- deliver ---------------------------------------------------------------------

    async def deliver(self, event_id: uuid.UUID, version: int, task: dict[str, Any]) -> None:
        kind = task["kind"]
        changed_at = dt.datetime.fromisoformat(task["changed_at"])
        after = uuid.UUID(task["after"]) if task["after"] else None
        upto = uuid.UUID(task["upto"])
        recipients = await self.pool.fetch(
            db.query("fanout_page_recipients"), event_id, kind, changed_at, after, upto, version
        )
        event = await self.pool.fetchrow(
            "SELECT title, venue, starts_at, ends_at FROM events WHERE id = $1", event_id
        )
        sent = failed = 0
        for start in range(0, len(recipients), self.batch_size):
            if await self.superseded(event_id, version):
                log.info("fanout_superseded", event_id=str(event_id), version=version,
                         page=task["page"], left=len(recipients) - start)
                break
            batch = recipients[start:start + self.batch_size]
            mails = [(user, *render(kind, event, user["name"])) for user in batch]
            results = await asyncio.gather(*(self.send(kind, user["email"], subject, body)
                                             for user, subject, body in mails))
            await self.pool.execute(
                db.query("fanout_record"), event_id, kind, version,
                [user["id"] for user, _, _ in mails], [user["email"] for user, _, _ in mails],
                [subject for _, subject, _ in mails], [body for _, _, body in mails],
                results,
            )
            sent += sum(results)
            failed += len(results) - sum(results)
            self.metrics.fanout_progress(kind, len(results))
        await self.pool.execute(
            "UPDATE announcement_pages SET done_at = now()"
            " WHERE event_id = $1 AND version = $2 AND page = $3 AND done_at IS NULL",
            event_id, version, task["page"],
        )
        log.info("fanout_page_delivered", event_id=str(event_id), version=version,
                 page=task["page"], sent=sent, failed=failed)
        await self.finish_if_done(event_id, version)

    async def send(self, kind: str, to: str, subject: str, body: str) -> bool:
        """One mail, a few tries; False when the mail server keeps refusing it."""
        async with self.sending:
            for attempt in range(1, MAIL_ATTEMPTS + 1):
                try:
                    await self.mailer.send(to, subject, body)
                    self.metrics.mail_sent(kind)
                    return True
                except MailError as exc:
                    if attempt == MAIL_ATTEMPTS:
                        self.metrics.mail_failed(kind)
                        log.warning("mail_failed", kind=kind, error=str(exc))
                        return False
                    await asyncio.sleep(0.05 * 2**attempt)
        return False

    async def superseded(self, event_id: uuid.UUID, version: int) -> bool:
        """A newer change exists: it will tell everyone, with the current details."""
        return bool(await self.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM announcements WHERE event_id = $1 AND version > $2)",
            event_id, version,
        ))

    async def finish_if_done(self, event_id: uuid.UUID, version: int) -> None:
        finished = await self.pool.fetchrow(db.query("fanout_finish"), event_id, version)
        if finished is not None:
            log.info("fanout_finished", event_id=str(event_id), version=version,
                     recipients=finished["recipients_total"])
