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
moment; it never records one twice. A message given up on (dead-lettered) records the
attendees it leaves untold as failed, so the announcement counts them; replayed from
the dead-letter stream, it tells them after all (a failed mail is sent again by a later
delivery of its page, a sent one never).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import uuid
from typing import Any

import asyncpg
import structlog
from redis.typing import EncodableT, FieldT

from eventbook import db, topics
from eventbook.actors.mailer import Mailer, MailError
from eventbook.actors.stream import Message, StreamActor
from eventbook.config import Config
from eventbook.connections import RedisClient
from eventbook.outages import is_outage, postgres_writable

log = structlog.get_logger(__name__)

START = db.query("fanout_start")
PAGES_HANDED_ON = db.query("fanout_pages_handed_on")
SET_PAGES_TOTAL = db.query("fanout_set_pages_total")
EVENT_DETAILS = db.query("fanout_event_details")
PAGE_DONE = db.query("fanout_page_done")
ANNOUNCEMENT = db.query("fanout_announcement")
SET_TOTAL_IF_UNSET = db.query("fanout_set_total_if_unset")
SET_TOTAL = db.query("fanout_set_total")
SUPERSEDED = db.query("fanout_superseded")
RECORD_PAGE = db.query("fanout_record_page")
SET_EXPANDED_THROUGH = db.query("fanout_set_expanded_through")
COUNT_RECIPIENTS = db.query("fanout_count_recipients")
NEXT_PAGE = db.query("fanout_next_page")
PAGE_RECIPIENTS = db.query("fanout_page_recipients")
RECORD = db.query("fanout_record")
FINISH = db.query("fanout_finish")

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


@dataclasses.dataclass(frozen=True)
class Page:
    """A deliver message's page of attendees: those after `after` up to `upto`."""

    number: int
    kind: str
    changed_at: dt.datetime
    after: uuid.UUID | None
    upto: uuid.UUID


def deliver_entry(
    event_id: uuid.UUID, version: int, page: Page, request_id: str | None
) -> dict[FieldT, EncodableT]:
    """The stream entry that hands one page of a change's attendees to the senders."""
    return {
        "kind": "deliver",
        "payload": json.dumps({
            "event_id": str(event_id), "version": version, "kind": page.kind,
            "changed_at": page.changed_at.isoformat(), "page": page.number,
            "after": str(page.after) if page.after else None, "upto": str(page.upto),
        }),
        "request_id": request_id or "",
    }


class Notifications(StreamActor):
    name = topics.NOTIFICATIONS
    topic = topics.NOTIFICATIONS
    concurrency = 8  # pages in hand at once; mails in flight are bounded separately

    def __init__(
        self,
        config: Config,
        pool: asyncpg.Pool,
        client: RedisClient,
        mailer: Mailer,
        *,
        page_size: int = 1000,
        batch_size: int = 250,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            config, client, probes=[lambda: postgres_writable(pool), mailer.probe], **kwargs
        )
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
            START,
            event_id, version,
        )
        if announcement is None:
            raise LookupError(f"no announcement for event {event_id} version {version}")
        if announcement["pages_total"] is not None:
            return  # expanded already: this is a redelivery
        kind, changed_at = announcement["kind"], announcement["changed_at"]
        if announcement["recipients_total"] is None:
            total = await self.pool.fetchval(
                COUNT_RECIPIENTS, event_id, kind, changed_at
            )
            await self.pool.execute(
                SET_TOTAL,
                event_id, version, total,
            )
            log.info("fanout_started", event_id=str(event_id), version=version, kind=kind,
                     recipients=total)
        cursor: uuid.UUID | None = announcement["expanded_through"]
        page = await self.pool.fetchval(
            PAGES_HANDED_ON,
            event_id, version,
        )
        while True:
            users = [row["user_id"] for row in await self.pool.fetch(
                NEXT_PAGE, event_id, kind, changed_at, cursor, self.page_size
            )]
            if not users:
                break
            # Hand the page on first, then record it: a crash in between hands the same
            # page on again, which deliver takes as a no-op for whoever was already told.
            await self.redis.xadd(self.stream, deliver_entry(
                event_id, version, Page(page, kind, changed_at, cursor, users[-1]),
                message.request_id,
            ))
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    RECORD_PAGE,
                    event_id, version, page, cursor, users[-1], len(users),
                )
                await conn.execute(
                    SET_EXPANDED_THROUGH,
                    event_id, version, users[-1],
                )
            cursor = users[-1]
            page += 1
        await self.pool.execute(
            SET_PAGES_TOTAL,
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
            PAGE_RECIPIENTS, event_id, kind, changed_at, after, upto, version
        )
        event = await self.pool.fetchrow(
            EVENT_DETAILS, event_id
        )
        sent = failed = 0
        for start in range(0, len(recipients), self.batch_size):
            if await self.superseded(event_id, version):
                log.info("fanout_superseded", event_id=str(event_id), version=version,
                         page=task["page"], left=len(recipients) - start)
                break
            batch = recipients[start:start + self.batch_size]
            mails = [(user, *render(kind, event, user["name"])) for user in batch]
            outcomes = await asyncio.gather(
                *(self.send(kind, user["email"], subject, body)
                  for user, subject, body in mails),
                return_exceptions=True,
            )
            # Recorded: the mails sent and the ones the mail server refused for good. A
            # mail not sent because the server is down is not recorded, so the page's
            # next try sends it.
            done = [(mail, ok) for mail, ok in zip(mails, outcomes, strict=True)
                    if isinstance(ok, bool)]
            await self.pool.execute(
                RECORD, event_id, kind, version,
                [user["id"] for (user, _, _), _ in done],
                [user["email"] for (user, _, _), _ in done],
                [subject for (_, subject, _), _ in done], [body for (_, _, body), _ in done],
                [ok for _, ok in done],
            )
            sent += sum(ok for _, ok in done)
            failed += sum(not ok for _, ok in done)
            self.metrics.fanout_progress(kind, len(done))
            errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
            if errors:
                raise next((error for error in errors if is_outage(error)), errors[0])
        await self.pool.execute(
            PAGE_DONE,
            event_id, version, task["page"],
        )
        log.info("fanout_page_delivered", event_id=str(event_id), version=version,
                 page=task["page"], sent=sent, failed=failed)
        await self.finish_if_done(event_id, version)

    # -- giving up -------------------------------------------------------------------

    async def on_dead_letter(self, message: Message, error: str) -> None:
        """Record as failed every attendee the given-up message was to tell and nobody
        has told yet; a page given up on is done, so the announcement can finish.

        Idempotent (the hook runs again if it fails): a failure is recorded once.
        """
        try:
            payload = message.payload
            event_id = uuid.UUID(payload["event_id"])
            version = int(payload["version"])
            if message.kind == "deliver":
                page = Page(
                    int(payload["page"]), payload["kind"],
                    dt.datetime.fromisoformat(payload["changed_at"]),
                    uuid.UUID(payload["after"]) if payload["after"] else None,
                    uuid.UUID(payload["upto"]),
                )
        except (ValueError, KeyError, TypeError):
            return  # a malformed message names nothing to count
        if message.kind == "deliver":
            await self.give_up_page(event_id, version, page)
        elif message.kind in CHANGE_KINDS:
            await self.give_up_expansion(event_id, version)
        await self.finish_if_done(event_id, version)

    async def give_up_page(self, event_id: uuid.UUID, version: int, page: Page) -> None:
        failed = 0
        # Like deliver: attendees of a superseded change are told by the newer one.
        if not await self.superseded(event_id, version):
            failed = await self.record_failed(
                event_id, version, page.kind, page.changed_at, page.after, page.upto
            )
        await self.pool.execute(
            PAGE_DONE,
            event_id, version, page.number,
        )
        log.error("fanout_page_given_up", event_id=str(event_id), version=version,
                  page=page.number, failed=failed)

    async def give_up_expansion(self, event_id: uuid.UUID, version: int) -> None:
        """The attendees past the pages already handed on: nobody will tell them unless
        the message is replayed. The announcement stays unfinished (pages_total unset),
        so a replay resumes the expansion where it stopped."""
        announcement = await self.pool.fetchrow(
            ANNOUNCEMENT,
            event_id, version,
        )
        if announcement is None or announcement["pages_total"] is not None:
            return  # nothing to count, or every page was handed on and answers for itself
        kind, changed_at = announcement["kind"], announcement["changed_at"]
        failed = 0
        if not await self.superseded(event_id, version):
            cursor: uuid.UUID | None = announcement["expanded_through"]
            while True:
                users = [row["user_id"] for row in await self.pool.fetch(
                    NEXT_PAGE, event_id, kind, changed_at, cursor,
                    self.page_size,
                )]
                if not users:
                    break
                failed += await self.record_failed(
                    event_id, version, kind, changed_at, cursor, users[-1]
                )
                cursor = users[-1]
        await self.pool.execute(
            SET_TOTAL_IF_UNSET,
            event_id, version,
            await self.pool.fetchval(
                COUNT_RECIPIENTS, event_id, kind, changed_at
            ),
        )
        log.error("fanout_expansion_given_up", event_id=str(event_id), version=version,
                  failed=failed)

    async def record_failed(
        self, event_id: uuid.UUID, version: int, kind: str, changed_at: dt.datetime,
        after: uuid.UUID | None, upto: uuid.UUID,
    ) -> int:
        """Record the untold attendees of one page as failed mails; how many there were."""
        recipients = await self.pool.fetch(
            PAGE_RECIPIENTS, event_id, kind, changed_at, after, upto, version
        )
        if not recipients:
            return 0
        event = await self.pool.fetchrow(
            EVENT_DETAILS, event_id
        )
        mails = [(user, *render(kind, event, user["name"])) for user in recipients]
        await self.pool.execute(
            RECORD, event_id, kind, version,
            [user["id"] for user, _, _ in mails], [user["email"] for user, _, _ in mails],
            [subject for _, subject, _ in mails], [body for _, _, body in mails],
            [False] * len(mails),
        )
        self.metrics.fanout_progress(kind, len(mails))
        return len(mails)

    # -- one mail ----------------------------------------------------------------------

    async def send(self, kind: str, to: str, subject: str, body: str) -> bool:
        """One mail, a few tries; False when the mail server keeps refusing it.
        MailUnavailable (the server is down) goes to the caller: the page waits."""
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
            SUPERSEDED,
            event_id, version,
        ))

    async def finish_if_done(self, event_id: uuid.UUID, version: int) -> None:
        finished = await self.pool.fetchrow(FINISH, event_id, version)
        if finished is not None:
            log.info("fanout_finished", event_id=str(event_id), version=version,
                     recipients=finished["recipients_total"])
