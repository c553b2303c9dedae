"""The confirmations actor: a booking is answered at once and its mail follows, once."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg
import pytest
import structlog

from eventbook.actors.confirmations import Confirmations
from eventbook.actors.mailer import MailError, SimulatedMailer
from eventbook.actors.stream import Message
from eventbook.config import Config
from eventbook.keys import REDIS
from tests.client import Api, User, eventually, expect
from tests.conftest import Inbox


async def booking_row(pool: asyncpg.Pool, booking_id: str) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT confirmation_status, confirmed_at FROM bookings WHERE id = $1", booking_id
    )
    assert row is not None
    return row


async def sent_mails(pool: asyncpg.Pool, booking_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT kind, recipient, subject, body, sent_at FROM notifications"
        " WHERE booking_id = $1 ORDER BY created_at",
        booking_id,
    )


async def confirmed(pool: asyncpg.Pool, booking_id: str) -> asyncpg.Record | None:
    row = await booking_row(pool, booking_id)
    return row if row["confirmation_status"] == "sent" else None


@pytest.fixture
async def concert(api: Api, organizer: User) -> dict[str, Any]:
    return await api.create_event(organizer, title="Night Concert", venue="Hall 1", capacity=50)


async def test_a_booking_is_answered_at_once_and_the_slow_mail_follows(
    make_api: Any, pool: asyncpg.Pool
) -> None:
    api = await make_api(actors=True, mail_latency_ms=2000)
    organizer = await api.register(role="organizer")
    customer = await api.register()
    event = await api.create_event(organizer, title="Night Concert")

    started = time.perf_counter()
    booking = await expect(await api.book(customer, event, quantity=2), 201)
    answered_in = time.perf_counter() - started

    assert answered_in < 1.0
    assert booking["confirmation_status"] == "pending"
    row = await eventually(lambda: confirmed(pool, booking["id"]), timeout=20)
    assert row["confirmed_at"] is not None
    [mail] = await sent_mails(pool, booking["id"])
    assert mail["kind"] == "booking_confirmed"
    assert mail["recipient"] == customer.email
    assert mail["sent_at"] is not None
    assert "Night Concert" in mail["subject"]
    assert "2 tickets" in mail["body"] and booking["id"] in mail["body"]
    shown = await expect(await api.get(f"/api/v1/bookings/{booking['id']}", customer), 200)
    assert shown["confirmation_status"] == "sent" and shown["confirmed_at"] is not None


async def test_a_message_handled_twice_sends_and_records_one_mail(
    api: Api, concert: dict[str, Any], customer: User, config: Config, pool: asyncpg.Pool
) -> None:
    booking = await expect(await api.book(customer, concert), 201)
    mailer = SimulatedMailer()
    actor = Confirmations(config, pool, api.app[REDIS], mailer)
    message = Message(
        "1-0", {"kind": "booking_confirmed", "payload": f'{{"booking_id": "{booking["id"]}"}}'}, 1
    )

    await actor.handle(message)
    await actor.handle(message)

    assert mailer.sent == 1
    assert len(await sent_mails(pool, booking["id"])) == 1
    assert (await booking_row(pool, booking["id"]))["confirmation_status"] == "sent"


async def test_a_cancelled_booking_gets_a_cancellation_mail_too(
    make_api: Any, pool: asyncpg.Pool
) -> None:
    api = await make_api(actors=True)
    organizer = await api.register(role="organizer")
    customer = await api.register()
    event = await api.create_event(organizer, title="Matinee")
    booking = await expect(await api.book(customer, event), 201)
    await eventually(lambda: confirmed(pool, booking["id"]))

    with structlog.testing.capture_logs() as logs:
        await expect(await api.post(f"/api/v1/bookings/{booking['id']}/cancel", customer), 200)

        async def two_mails() -> list[asyncpg.Record]:
            mails = await sent_mails(pool, booking["id"])
            return mails if len(mails) == 2 and all(m["sent_at"] for m in mails) else []

        mails = await eventually(two_mails)
    assert [mail["kind"] for mail in mails] == ["booking_confirmed", "booking_cancelled"]
    # Logged by its own name, not as a confirmation.
    sent = [line for line in logs if line.get("booking_id") == booking["id"]
            and line["event"].endswith("_sent")]
    assert [(line["event"], line["kind"]) for line in sent] == [
        ("cancellation_sent", "booking_cancelled")
    ]
    assert mails[1]["subject"] == "Booking cancelled: Matinee"
    row = await booking_row(pool, booking["id"])
    assert row["confirmation_status"] == "sent"


async def test_every_actor_log_line_for_a_booking_carries_its_request_id(
    make_api: Any, pool: asyncpg.Pool
) -> None:
    api = await make_api(actors=True)
    organizer = await api.register(role="organizer")
    customer = await api.register()
    event = await api.create_event(organizer)

    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        answer = await api.post(
            f"/api/v1/events/{event['id']}/bookings", customer, json={"quantity": 1},
            headers={"X-Request-ID": "trace-me-1234"},
        )
        booking = await expect(answer, 201)
        await eventually(lambda: any(
            line["event"] == "message_handled" and line.get("request_id") == "trace-me-1234"
            for line in logs
        ))

    traced = [line for line in logs if line.get("request_id") == "trace-me-1234"]
    events = {line["event"] for line in traced}
    # The access line, the relay's, the actor's and the mail's.
    assert {"request", "booking_created", "outbox_relayed", "confirmation_sent",
            "message_handled"} <= events
    sent = [line for line in traced if line["event"] == "confirmation_sent"]
    assert [line["booking_id"] for line in sent] == [booking["id"]]
    actor_lines = [line for line in logs if line.get("actor") == "confirmations"
                   and line.get("message_id")]
    assert actor_lines and all(line["request_id"] == "trace-me-1234" for line in actor_lines)


# -- real SMTP -------------------------------------------------------------------------


async def test_a_real_smtp_server_receives_the_confirmation_mail(
    make_api: Any, pool: asyncpg.Pool, smtp_server: tuple[str, Inbox]
) -> None:
    url, inbox = smtp_server
    api = await make_api(actors=True, smtp_url=url, mail_from="tickets@eventbook.test")
    organizer = await api.register(role="organizer")
    customer = await api.register()
    event = await api.create_event(organizer, title="Jazz on the Roof")
    booking = await expect(await api.book(customer, event), 201)

    await eventually(lambda: confirmed(pool, booking["id"]))

    assert inbox.logins == [(b"robot", b"secret")]
    [(recipients, mail)] = inbox.mails
    assert recipients == [customer.email]
    assert mail["To"] == customer.email
    assert mail["From"] == "tickets@eventbook.test"
    assert mail["Subject"] == "Booking confirmed: Jazz on the Roof"
    assert booking["id"] in mail.get_payload()



class RefusingMailer(SimulatedMailer):
    """A mail server that refuses every mail to one address, and counts the others."""

    def __init__(self, refused: str) -> None:
        super().__init__()
        self.refused = refused
        self.to: list[str] = []

    async def send(self, to: str, subject: str, body: str) -> None:
        await asyncio.sleep(0)
        if to == self.refused:
            raise MailError("mailbox unavailable")
        self.to.append(to)


class CountingConfirmations(Confirmations):
    """Remembers how many messages shared each lookup statement."""

    lookup_sizes: list[int]

    async def _look_up(self, batch: list[Any]) -> None:
        self.lookup_sizes.append(len(batch))
        await super()._look_up(batch)


async def test_many_messages_handled_together_share_statements_and_each_mail_goes_once(
    api: Api, concert: dict[str, Any], config: Config, pool: asyncpg.Pool
) -> None:
    customers = await api.seed_users(pool, 300)
    bookings = await pool.fetch(
        "INSERT INTO bookings (event_id, user_id, quantity)"
        " SELECT $1, unnest($2::uuid[]), 1 RETURNING id, user_id",
        concert["id"], [customer.id for customer in customers],
    )
    email = {customer.id: customer.email for customer in customers}
    refused = email[str(bookings[0]["user_id"])]
    mailer = RefusingMailer(refused)
    actor = CountingConfirmations(config, pool, api.app[REDIS], mailer)
    actor.lookup_sizes = []
    messages = [
        Message(f"{n}-0", {"kind": "booking_confirmed",
                           "payload": json.dumps({"booking_id": str(row["id"])})}, 1)
        for n, row in enumerate(bookings, 1)
    ]

    outcomes = await asyncio.gather(*map(actor.handle, messages), return_exceptions=True)
    # Delivered again, all at once: nothing is sent twice.
    again = await asyncio.gather(*map(actor.handle, messages[1:]), return_exceptions=True)

    assert isinstance(outcomes[0], MailError)  # its own failure only
    assert outcomes[1:] == again == [None] * 299
    assert sorted(mailer.to) == sorted(email[str(row["user_id"])] for row in bookings[1:])
    assert sum(actor.lookup_sizes) == 599 and len(actor.lookup_sizes) < 20
    mails = await pool.fetch(
        "SELECT booking_id, sent_at FROM notifications WHERE event_id = $1", concert["id"]
    )
    assert len(mails) == 300  # each recorded once, the refused one too
    assert sum(mail["sent_at"] is None for mail in mails) == 1
    statuses = await pool.fetch(
        "SELECT confirmation_status, count(*) FROM bookings WHERE event_id = $1 GROUP BY 1",
        concert["id"],
    )
    assert {row["confirmation_status"]: row["count"] for row in statuses} == {
        "sent": 299, "pending": 1
    }
