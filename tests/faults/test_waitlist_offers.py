"""Workers SIGKILLed while waiting-list offers run out and move down the line, and while
the offer mails go out: every entry is offered once, in order of joining, no ticket is
lost or counted twice, and every offer is mailed (at least once) and recorded once."""

from __future__ import annotations

import asyncio
import random
import signal
import uuid
from collections import Counter
from typing import Any

import asyncpg

from eventbook.actors.confirmations import Confirmations
from eventbook.config import Config
from tests.client import eventually
from tests.faults.conftest import MailServer, Processes
from tests.faults.invariants import assert_settled, queues, wait_until_drained
from tests.processes import environment
from tests.seed import insert_event, insert_holds, insert_users, seed_users

EVENTS = 10
CAPACITY = 40
WAITING = 100        # per event, each for one or two tickets: four rounds of offers or so
OFFER_SECONDS = 1
# The confirmations actor's messages in hand at once: the most a kill can leave mailed
# but not yet stamped sent, so mailed again.
IN_HAND = Confirmations.concurrency

ENTRIES = """
SELECT w.id, w.seq, w.event_id, w.user_id, w.status, w.hold_id, w.offered_at
  FROM waitlist_entries w ORDER BY w.event_id, w.seq
"""
LEDGER = """
SELECT e.capacity, e.available_tickets, t.taken, t.reserved, t.waiting
  FROM events e JOIN ticket_types t ON t.event_id = e.id ORDER BY e.id
"""
# The holds actor's expire_holds, waiting for a row lock.
# The holds worker's expiry, waiting on the lock that backend $1 holds. Asked by who
# blocks it: any backend whose query names expire_holds and that waits a moment on some
# other lock would match a looser test, and may be gone before it is terminated.
BLOCKED_EXPIRY = """
SELECT pid FROM pg_stat_activity
 WHERE query LIKE '%expire_holds%' AND backend_type = 'client backend'
   AND $1 = ANY (pg_blocking_pids(pid))
"""


class SlowMailServer(MailServer):
    """A mail server that takes a twentieth of a second over each mail, so that a worker
    killed while mailing has mails in flight."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(0.05)
        return await super().handle_DATA(server, session, envelope)


async def count(pool: asyncpg.Pool, sql: str, *args: Any) -> int:
    return int(await pool.fetchval(sql, *args))


async def offers_sent(pool: asyncpg.Pool) -> int:
    return await count(
        pool, "SELECT count(*) FROM notifications WHERE kind = 'waitlist_offer'"
        " AND sent_at IS NOT NULL",
    )


async def test_offers_moving_down_the_line_survive_killed_workers(
    config: Config, pool: asyncpg.Pool, processes: Processes
) -> None:
    """Ten sold-out events, each with 100 customers waiting; every ticket was held, and
    the holds run out. A worker running only the holds actor expires them, and each
    expiry offers the tickets to the next in line in the same transaction; offers last a
    second, so they run out and move on, round after round. That worker is SIGKILLed
    in the middle of a round (its transaction halfway through the events, stopped on a
    row lock; its connection then ended, as PostgreSQL ends one whose client is gone):
    nothing of the round is kept, and nothing moves while no worker runs. Restarted, it
    takes the line to its end. Meanwhile another worker mails the offers through a slow
    mail server and is SIGKILLed with mails in flight, then restarted.

    Every entry was offered once, after every entry ahead of it; every ticket is back on
    sale; each offer has one mail recorded and stamped sent, and reached its customer at
    least once (twice at most for the mails in hand at the kill); `eventbook check` finds
    nothing and no stream message is left."""
    config = config.replace(claim_idle_ms=1000)
    mail = SlowMailServer()
    mail.start()
    try:
        await offers_survive_killed_workers(config, pool, processes, mail)
    finally:
        mail.stop()


async def offers_survive_killed_workers(
    config: Config, pool: asyncpg.Pool, processes: Processes, mail: MailServer
) -> None:
    rng = random.Random(17)
    holders = await insert_users(pool, CAPACITY)
    events = sorted([await insert_event(pool, capacity=CAPACITY) for _ in range(EVENTS)])
    emails: dict[uuid.UUID, str] = {}
    for event in events:
        await insert_holds(pool, event, holders, 600)
        waiters = await seed_users(pool, WAITING)
        emails.update((user.id, user.email) for user in waiters)
        # One transaction, in this order: seq follows the list.
        await pool.executemany(
            "SELECT outcome FROM join_waitlist($1, NULL, $2, $3)",
            [(event, user.id, rng.choice((1, 2))) for user in waiters],
        )
    assert await count(
        pool, "SELECT count(*) FROM waitlist_entries WHERE status = 'waiting'"
    ) == EVENTS * WAITING
    await pool.execute("UPDATE holds SET expires_at = now() + interval '0.2 seconds'")

    env = environment(config, EVENTBOOK_WAITLIST_OFFER_SECONDS=str(OFFER_SECONDS),
                      EVENTBOOK_SMTP_URL=mail.url)
    holds = processes.worker(env, "--actors", "holds", name="holds-killed")
    mailer = processes.worker(env, "--actors", "relay,confirmations", name="mail-killed")
    holds.wait_for_output("worker_running")

    # The first round of offers is made; the second will stop on the last event's row
    # of the next in line.
    await eventually(lambda: count(
        pool, "SELECT count(DISTINCT event_id) FROM waitlist_entries WHERE status = 'offered'"
    ), timeout=30)
    first_round = await pool.fetch(ENTRIES)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT FROM waitlist_entries WHERE id = (SELECT id FROM waitlist_entries"
            " WHERE event_id = $1 AND status = 'waiting' ORDER BY seq LIMIT 1) FOR SHARE",
            events[-1],
        )
        holder = await conn.fetchval("SELECT pg_backend_pid()")
        pid = await eventually(lambda: pool.fetchval(BLOCKED_EXPIRY, holder), timeout=10,
                               interval=0.01)
        holds.stop(signal.SIGKILL)
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", pid)
    # The round is undone whole, and with no holds actor running nothing moves on,
    # though the offers are past their time.
    await asyncio.sleep(OFFER_SECONDS + 0.5)
    assert await pool.fetch(ENTRIES) == first_round
    assert await count(
        pool, "SELECT count(*) FROM holds h JOIN waitlist_entries w ON w.hold_id = h.id"
        " WHERE h.status = 'held' AND h.expires_at < now()",
    ) == sum(entry["status"] == "offered" for entry in first_round)

    # The mails of the first round are out; the second round's are going when their
    # worker is killed.
    first_offers = sum(entry["status"] == "offered" for entry in first_round)
    await eventually(lambda: _sent_equals(pool, first_offers), timeout=30)
    processes.worker(env, "--actors", "holds", name="holds-restarted")
    await eventually(lambda: _sent_at_least(pool, first_offers + 50), timeout=30,
                     interval=0.01)
    mailer.stop(signal.SIGKILL)
    assert await offers_sent(pool) < EVENTS * WAITING, "the kill came too late"
    [left] = [row for row in queues(config) if row["group"] == "confirmations"]
    assert left["pending"] > 0, "nothing was in hand at the kill"
    mailer = processes.worker(env, "--actors", "relay,confirmations", name="mail-restarted")

    async def line_ended() -> bool:
        return not await count(
            pool, "SELECT count(*) FROM waitlist_entries WHERE status IN ('waiting', 'offered')"
        )

    await eventually(line_ended, timeout=40, interval=0.2)
    await eventually(lambda: _sent_equals(pool, EVENTS * WAITING), timeout=30, interval=0.2)
    await wait_until_drained(config)
    processes.stop_all()
    assert "message_claimed" in mailer.output

    entries = await pool.fetch(ENTRIES)
    assert len(entries) == EVENTS * WAITING
    assert {entry["status"] for entry in entries} == {"expired"}
    # Offered once each (one hold, one offer mail), and in order of joining: no entry's
    # offer was made before that of one ahead of it.
    assert len({entry["hold_id"] for entry in entries}) == len(entries)
    for event in events:
        line = [entry for entry in entries if entry["event_id"] == event]
        times = [entry["offered_at"] for entry in line]
        assert times == sorted(times), event
    offer_holds = await pool.fetch(
        "SELECT user_id, status FROM holds WHERE user_id <> ALL($1::uuid[])", holders
    )
    assert sorted(h["user_id"] for h in offer_holds) == sorted(emails)
    assert {h["status"] for h in offer_holds} == {"expired"}
    # Nobody waits: every ticket is on sale again.
    assert {tuple(row) for row in await pool.fetch(LEDGER)} == {(CAPACITY, CAPACITY, 0, 0, 0)}
    notes = await pool.fetch(
        "SELECT hold_id, sent_at FROM notifications WHERE kind = 'waitlist_offer'"
    )
    assert sorted(n["hold_id"] for n in notes) == sorted(e["hold_id"] for e in entries)
    mailed = Counter(mail.recipients)
    assert set(mailed) == set(emails.values())
    assert sum(mailed.values()) - len(emails) <= IN_HAND, mailed.most_common(3)
    assert max(mailed.values()) <= 2
    assert_settled(config)


async def _sent_equals(pool: asyncpg.Pool, sent: int) -> bool:
    return await offers_sent(pool) == sent


async def _sent_at_least(pool: asyncpg.Pool, sent: int) -> bool:
    return await offers_sent(pool) >= sent
