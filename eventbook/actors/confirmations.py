"""The confirmations actor: one mail per booking confirmed or cancelled, and per
waiting-list offer, each recorded once."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog

from eventbook import db, topics
from eventbook.actors.mailer import Mailer
from eventbook.actors.stream import Message, StreamActor
from eventbook.coalescer import Coalescer, fail
from eventbook.config import Config
from eventbook.connections import RedisClient
from eventbook.outages import is_outage, postgres_writable

log = structlog.get_logger(__name__)

KINDS = ("booking_confirmed", "booking_cancelled", "waitlist_offer")
# The log line of each mail sent, so that one booking can be followed by name.
SENT_EVENTS = {"booking_confirmed": "confirmation_sent", "booking_cancelled": "cancellation_sent"}

BOOKING = db.query("confirmation_booking")
RECORD = db.query("confirmation_record")
RECORDED = db.query("confirmation_recorded")
MARK_SENT = db.query("confirmation_mark_sent")
MARK_FAILED = db.query("confirmation_mark_failed")
OFFER = db.query("waitlist_offer_mail")
OFFER_RECORD = db.query("waitlist_offer_record")
OFFER_RECORDED = db.query("waitlist_offer_recorded")
NOTE_SENT = db.query("notification_mark_sent")
OFFER_MARK_FAILED = db.query("waitlist_offer_mark_failed")


@dataclasses.dataclass(eq=False)
class Step:
    """One message's turn in a statement shared by the messages handled together: the
    (booking, kind) it is about, what else the statement needs of it, and its answer."""

    key: tuple[uuid.UUID, str]
    args: tuple[Any, ...]
    done: asyncio.Future[Any]


def _when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%A %d %B %Y, %H:%M UTC")


def compose(kind: str, booking: asyncpg.Record | dict[str, Any]) -> tuple[str, str]:
    """Subject and body of the mail for `booking` (a row of BOOKING)."""
    starts = _when(booking["starts_at"])
    tickets = f"{booking['quantity']} ticket{'s' if booking['quantity'] != 1 else ''}"
    where = f" at {booking['venue']}" if booking["venue"] else ""
    if kind == "booking_confirmed":
        subject = f"Booking confirmed: {booking['title']}"
        news = f"Your booking is confirmed: {tickets} for {booking['title']}{where}."
    else:
        subject = f"Booking cancelled: {booking['title']}"
        news = f"Your booking of {tickets} for {booking['title']}{where} is cancelled."
    body = (
        f"Hello {booking['name']},\n\n"
        f"{news}\n"
        f"The event starts {starts}.\n\n"
        f"Booking: {booking['id']}\n"
        f"Event: {booking['event_id']}\n"
    )
    return subject, body


def recorded(row: asyncpg.Record) -> Any:
    """The mail a row (of BOOKING or OFFER) found recorded already, or None."""
    if row["note_id"] is None:
        return None
    return {"id": row["note_id"], "recipient": row["recipient"], "subject": row["subject"],
            "body": row["body"], "sent_at": row["sent_at"]}


def compose_offer(offer: asyncpg.Record | dict[str, Any]) -> tuple[str, str]:
    """Subject and body of the mail offering `offer` (a row of OFFER)."""
    tickets = f"{offer['quantity']} ticket{'s' if offer['quantity'] != 1 else ''}"
    where = f" at {offer['venue']}" if offer["venue"] else ""
    price = (
        f"{offer['total_cents'] / 100:.2f} {offer['currency']}" if offer["total_cents"] else "free"
    )
    body = (
        f"Hello {offer['name']},\n\n"
        f"Tickets came back and you are next on the waiting list: {tickets}"
        f" ({offer['ticket_type']}) for {offer['title']}{where} are held in your name"
        f" until {_when(offer['expires_at'])}.\n"
        f"Total: {price}. The event starts {_when(offer['starts_at'])}.\n\n"
        f"To book them, confirm the hold: POST /api/v1/holds/{offer['id']}/confirm\n"
        f"Not needed? Release it so the next in line gets them: "
        f"DELETE /api/v1/holds/{offer['id']}\n\n"
        f"Hold: {offer['id']}\n"
        f"Event: {offer['event_id']}\n"
    )
    return f"Tickets for you: {offer['title']}", body


def _answer(step: Step, value: Any) -> None:
    if not step.done.done():
        step.done.set_result(value)


class Confirmations(StreamActor):
    """Sends and records the booking_confirmed, booking_cancelled and waitlist_offer
    mails."""

    name = topics.CONFIRMATIONS
    topic = topics.CONFIRMATIONS
    # Mostly waiting on the mail server and three short statements: many in flight.
    concurrency = 64

    def __init__(
        self, config: Config, pool: asyncpg.Pool, client: RedisClient, mailer: Mailer,
        **options: Any,
    ) -> None:
        super().__init__(
            config, client, probes=[lambda: postgres_writable(pool), mailer.probe], **options
        )
        self.pool = pool
        self.mailer = mailer
        # The booking mails in hand are looked up, recorded and marked sent together:
        # one statement (and commit) per step for all the messages that reach it while
        # the previous one runs, as the booking batcher does for bookings.
        self.lookups: Coalescer[Step] = self._coalescer(self._look_up)
        self.records: Coalescer[Step] = self._coalescer(self._record)
        self.marks: Coalescer[Step] = self._coalescer(self._mark_sent)

    def _coalescer(
        self, run: Callable[[list[Step]], Awaitable[None]]
    ) -> Coalescer[Step]:
        async def call(batch: list[Step]) -> None:
            try:
                await run(batch)
            except Exception as exc:
                if len(batch) == 1 or is_outage(exc):
                    raise
                # One message's data may have failed the shared statement: each goes
                # alone, so a failure is only its own message's.
                log.warning("confirmation_batch_failed", messages=len(batch), error=repr(exc))
                for step in batch:
                    if step.done.done():
                        continue
                    try:
                        await run([step])
                    except Exception as own:
                        fail([step.done], own)

        return Coalescer(call, lambda step: step.done, self.concurrency)

    async def _step(self, steps: Coalescer[Step], key: tuple[uuid.UUID, str],
                    *args: Any) -> Any:
        """Wait for `key`'s turn in the next statement of `steps`, and its answer."""
        step = Step(key, args, asyncio.get_running_loop().create_future())
        steps.submit(step)
        try:
            return await step.done
        except asyncio.CancelledError:
            steps.withdraw(step)
            raise

    async def _look_up(self, batch: list[Step]) -> None:
        keys = list(dict.fromkeys(step.key for step in batch))
        rows = await self.pool.fetch(BOOKING, [k[0] for k in keys], [k[1] for k in keys])
        found = {(row["id"], row["kind"]): row for row in rows}
        for step in batch:
            _answer(step, found.get(step.key))

    async def _record(self, batch: list[Step]) -> None:
        firsts = {step.key: step for step in reversed(batch)}
        mails = [(key, step.args) for key, step in firsts.items()]
        rows = await self.pool.fetch(
            RECORD, [args[0] for _, args in mails], [key[1] for key, _ in mails],
            [args[1] for _, args in mails], [key[0] for key, _ in mails],
            *([args[i] for _, args in mails] for i in (2, 3, 4)),
        )
        notes = {(row["booking_id"], row["kind"]): row for row in rows}
        # Recorded already by a twin of the message: read what it recorded.
        missing = [key for key in firsts if key not in notes]
        if missing:
            rows = await self.pool.fetch(
                RECORDED, [key[0] for key in missing], [key[1] for key in missing]
            )
            notes |= {(row["booking_id"], row["kind"]): row for row in rows}
        for step in batch:
            note = notes.get(step.key)
            if note is None:
                fail([step.done], RuntimeError(f"no {step.key[1]} mail recorded for {step.key[0]}"))
            else:
                _answer(step, note)

    async def _mark_sent(self, batch: list[Step]) -> None:
        marks = {step.args[0]: step.key for step in batch}
        await self.pool.execute(
            MARK_SENT, list(marks), [key[0] for key in marks.values()],
            [key[1] for key in marks.values()],
        )
        for step in batch:
            _answer(step, None)

    async def handle(self, message: Message) -> None:
        kind = message.kind
        if kind not in KINDS:
            log.warning("confirmation_kind_unknown", kind=kind)
            return
        if kind == "waitlist_offer":
            await self._offer(uuid.UUID(str(message.payload["hold_id"])))
            return
        booking_id = uuid.UUID(str(message.payload["booking_id"]))
        key = (booking_id, kind)
        booking = await self._step(self.lookups, key)
        if booking is None:
            log.warning("confirmation_booking_missing", booking_id=str(booking_id))
            return
        note = recorded(booking)
        if note is None:
            subject, body = compose(kind, booking)
            note = await self._step(
                self.records, key, booking["user_id"], booking["event_id"], booking["email"],
                subject, body,
            )
        if note["sent_at"] is not None:
            log.info("confirmation_already_sent", kind=kind, booking_id=str(booking_id))
            return
        await self.send(kind, note)
        await self._step(self.marks, key, note["id"])
        log.info(SENT_EVENTS.get(kind, "mail_sent"), kind=kind, booking_id=str(booking_id),
                 notification_id=str(note["id"]))

    async def send(self, kind: str, note: Any) -> None:
        """Send a recorded mail, counting it sent or failed."""
        try:
            await self.mailer.send(note["recipient"], note["subject"], note["body"])
        except Exception:
            self.metrics.mail_failed(kind)
            raise
        self.metrics.mail_sent(kind)

    async def _offer(self, hold_id: uuid.UUID) -> None:
        offer = await self.pool.fetchrow(OFFER, hold_id)
        if offer is None:
            log.warning("waitlist_offer_hold_missing", hold_id=str(hold_id))
            return
        note = recorded(offer)
        if note is None:
            subject, body = compose_offer(offer)
            note = await self.pool.fetchrow(
                OFFER_RECORD, offer["user_id"], offer["event_id"], hold_id, offer["email"],
                subject, body,
            ) or await self.pool.fetchrow(OFFER_RECORDED, hold_id)
        assert note is not None
        if note["sent_at"] is not None:
            log.info("waitlist_offer_already_sent", hold_id=str(hold_id))
            return
        await self.send("waitlist_offer", note)
        await self.pool.execute(NOTE_SENT, note["id"])
        log.info("waitlist_offer_sent", hold_id=str(hold_id), notification_id=str(note["id"]))

    async def on_dead_letter(self, message: Message, error: str) -> None:
        if message.kind == "waitlist_offer":
            try:
                hold_id = uuid.UUID(str(message.payload["hold_id"]))
            except (ValueError, KeyError, TypeError):
                return
            await self.pool.execute(OFFER_MARK_FAILED, hold_id)
            log.error("waitlist_offer_mail_failed", hold_id=str(hold_id), error=error)
            return
        if message.kind != "booking_confirmed":
            return
        try:
            booking_id = uuid.UUID(str(message.payload["booking_id"]))
        except (ValueError, KeyError, TypeError):
            return  # a malformed message names no booking to mark
        await self.pool.execute(MARK_FAILED, booking_id)
        log.error("confirmation_failed", booking_id=str(booking_id), error=error)
