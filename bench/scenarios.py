"""The scenarios, each against real `eventbook` processes: bookings on one hot event
(flash) and over many (spread), the confirmation lag, the webhook lag, one change fanned
out to every attendee, and booking load under floods of searches and scrapes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench.ceilings import UNBOUNDED
from bench.processes import cpu_seconds, cpu_used, postgres_pids
from bench.profile import profiled
from bench.runs import BODY, booking_run, latency_ms, percentile
from bench.webhook_receiver import WebhookReceiver
from bench.world import World
from bench.wrk import run_wrk
from eventbook import db
from eventbook.actors import ACTOR_NAMES
from eventbook.booking_batcher import MAX_BATCH
from eventbook.check import consistency_report
from eventbook.connections import create_pool
from eventbook.webhooks import new_secret
from tests import seed
from tests.processes import ROOT, Process, Server, environment

WAITLIST_ENTRY = db.query("waitlist_entry")


class Failed(Exception):
    """The run broke an invariant (oversold, a booking lost): a failed run, not a figure."""


async def flash_sale(world: World, server: Server, customers: Path, *,
                     capacity: int, connections: int, threads: int, limit: float
                     ) -> dict[str, Any]:
    """One event, `capacity` tickets, every connection booking 1 ticket a request for a
    new customer until the event is sold out. The sell-out seen in the database ends the
    run, half a second later: wrk's first 409 may come before 201s already written on
    other connections (in another server process, or read later by wrk on a busy
    machine), which stopping there would never count."""
    [event] = await world.insert_events(1, capacity)
    result = await booking_run(world, server.url, "flash", [event], customers,
                               connections=connections, duration=limit, threads=threads,
                               until_sold_out=True, server_pid=server.proc.pid,
                               refusals_expected=True, settle=0.5)
    ledger = await world.ledger(event)
    result["ledger"] = ledger
    created = result["statuses"].get("201", 0)
    if ledger["available_tickets"] != 0:
        raise Failed(f"flash sale not sold out within {limit:.0f} s: {ledger}")
    if not ledger["held"] == ledger["bookings"] == capacity == created:
        raise Failed(
            f"flash sale sold {ledger['held']} tickets in {ledger['bookings']} bookings and "
            f"answered {created} x 201 for a capacity of {capacity}"
        )
    return result


# The two ticket types of flash_types: name, price, quota as a share of the capacity.
# Together above the capacity (125%): the requests take as many of each, so the event's
# capacity ends the sale with both types' quotas still open, and no request is refused
# before the end (a type sold out on the way would make every request naming it a cheap
# 409, and the figure a mix of two loads).
FLASH_TYPES = (("Standard", 4_500, 0.7), ("Premium", 12_000, 0.55))


async def flash_types(world: World, server: Server, customers: Path, *,
                      capacity: int, connections: int, threads: int, limit: float
                      ) -> dict[str, Any]:
    """A flash sale as `flash_sale` over two ticket types (FLASH_TYPES) until the event is
    sold out. Requests go round three bodies: 1 Standard, 1 Premium, 1 of each."""
    [event] = await world.insert_events(1, capacity)
    types = await world.insert_ticket_types(
        event, [(name, price, round(share * capacity)) for name, price, share in FLASH_TYPES]
    )
    standard, premium = (str(t) for t in types)
    bodies = world.lines_file("flash-types.bodies", [
        json.dumps({"items": items}, separators=(",", ":")) for items in (
            [{"ticket_type_id": standard, "quantity": 1}],
            [{"ticket_type_id": premium, "quantity": 1}],
            [{"ticket_type_id": standard, "quantity": 1},
             {"ticket_type_id": premium, "quantity": 1}],
        )
    ])
    result = await booking_run(world, server.url, "flash-types", [event], customers,
                               connections=connections, duration=limit, threads=threads,
                               until_sold_out=True, refusals_expected=True,
                               server_pid=server.proc.pid, body=f"@{bodies}")
    ledger = await world.ledger(event)
    kinds = await world.type_ledger(event)
    result["ledger"] = ledger
    result["types"] = kinds
    created = result["statuses"].get("201", 0)
    if ledger["available_tickets"] != 0:
        raise Failed(f"two-type flash sale not sold out within {limit:.0f} s: {ledger}")
    if not ledger["held"] == capacity == sum(t["taken"] or 0 for t in kinds.values()):
        raise Failed(f"two-type flash sale sold {ledger['held']} tickets for a capacity of "
                     f"{capacity}: {kinds}")
    if ledger["bookings"] != created:
        raise Failed(f"two-type flash sale answered {created} x 201 for "
                     f"{ledger['bookings']} bookings")
    for name, kind in kinds.items():
        if kind["taken"] != kind["sold"] or (kind["quota"] or capacity) < (kind["sold"] or 0):
            raise Failed(f"ticket type {name} of the two-type flash sale: {kind}")
    return result


async def hold_confirm(world: World, server: Server, customers: Path, *,
                       capacity: int, connections: int, threads: int, limit: float
                       ) -> dict[str, Any]:
    """A flash sale through checkout: each purchase is a hold of 1 ticket, then its
    confirmation by the same customer as soon as the hold is answered, until all
    `capacity` tickets are sold and none is held. bookings_per_s is purchases a second;
    the latency is per request (holds and confirmations together)."""
    [event] = await world.insert_events(1, capacity)
    result = await booking_run(world, server.url, "hold-confirm", [event], customers,
                               connections=connections, duration=limit, threads=threads,
                               until_sold_out=True, holds=True, refusals_expected=True,
                               server_pid=server.proc.pid)
    ledger = await world.ledger(event)
    result["ledger"] = ledger
    created = result["statuses"].get("201", 0)
    if ledger["available_tickets"] != 0 or ledger["holds_live"]:
        raise Failed(f"checkout flash sale not sold out within {limit:.0f} s: {ledger}")
    if not (ledger["held"] == ledger["bookings"] == ledger["from_holds"] == capacity
            == ledger["holds"] == ledger["holds_confirmed"]) or created != 2 * capacity:
        raise Failed(f"checkout flash sale of {capacity} tickets answered {created} x 201: "
                     f"{ledger}")
    return result


async def expiry(world: World, *, holds: int, limit: float) -> dict[str, Any]:
    """`holds` holds of 1 ticket, on one event of `holds` tickets, all expiring at the
    same instant, with an `eventbook worker` running the holds actor: the seconds from
    that expires_at until every ticket is bookable again (available_tickets back to the
    capacity, the ticket type's taken back to 0).

    The holds are taken by book_tickets itself (calls of 256 requests) with the default
    life of 600 s; then, with the actor running, one UPDATE moves every expires_at to
    the same instant, the start of a second 1 to 2 s ahead, so the actor has looked
    at least once (it looks every second at most) and sleeps until then."""
    await forget_backlog(world)
    [event] = await world.insert_events(1, holds)
    taken = await take_tickets(world, event, holds, hold=True, request_id="bench-expiry")
    if taken != holds or await world.available(event) != 0:
        raise Failed(f"expiry: {taken} holds taken of {holds}")
    actors = await worker(world, "worker-expiry", EVENTBOOK_ACTORS="holds")
    try:
        due = await world.db.fetchval(
            "WITH due AS (SELECT date_trunc('second', clock_timestamp())"
            "                    + interval '2 seconds' AS at)"
            " UPDATE holds SET expires_at = due.at FROM due"
            "  WHERE event_id = $1 AND status = 'held' RETURNING due.at",
            event,
        )
        deadline = time.monotonic() + limit
        back_s = None
        while time.monotonic() < deadline:
            row = await world.db.fetchrow(
                "SELECT available_tickets = capacity AS back,"
                " extract(epoch FROM clock_timestamp() - $2)::float8 AS since"
                " FROM events WHERE id = $1",
                event, due,
            )
            assert row is not None
            if row["back"]:
                back_s = row["since"]
                break
            await asyncio.sleep(0.01)
        ended = await world.db.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'expired') AS expired,"
            " extract(epoch FROM min(ended_at) - $2)::float8 AS first_s,"
            " extract(epoch FROM max(ended_at) - $2)::float8 AS last_s"
            " FROM holds WHERE event_id = $1",
            event, due,
        )
        assert ended is not None
    finally:
        actors.stop()
    kinds = await world.type_ledger(event)
    ledger = await world.ledger(event)
    if back_s is None:
        raise Failed(f"expiry: tickets not back within {limit:.0f} s: {ledger}")
    if ended["expired"] != holds or any(t["taken"] for t in kinds.values()):
        raise Failed(f"expiry of {holds} holds: {ledger} {kinds}")
    return {
        "holds": holds,
        "back_s": back_s,
        # The actor's transactions' start (ended_at is now()), from the expires_at.
        "first_expired_s": ended["first_s"],
        "last_expired_s": ended["last_s"],
        "ledger": ledger,
    }


async def take_tickets(world: World, event: uuid.UUID, count: int, *, hold: bool,
                       request_id: str) -> int:
    """`count` tickets of `event`, 1 each for bench customers 1..`count`, through
    book_tickets itself (holds with the default life of 600 s, or bookings): the number
    it created."""
    taken = 0
    # Calls of the server's largest batch: a call of 1,000 holds takes seconds.
    for start in range(0, count, MAX_BATCH):
        size = min(MAX_BATCH, count - start)
        taken += await world.db.fetchval(
            "SELECT count(*) FILTER (WHERE outcome = 'created') FROM book_tickets("
            " array_fill($1::uuid, $3),"
            " (SELECT array_agg(id ORDER BY n) FROM bench_customers"
            "   WHERE n > $2 AND n <= $2 + $4),"
            " array_fill($5::boolean, $3), array_fill(1, $3), array_fill(NULL::text, $3),"
            " array_fill('bench'::text, $3), array_fill($6::text, $3),"
            " array_fill(NULL::uuid, $3), array_fill(1, $3), 600, NULL)",
            event, start, [size], size, hold, request_id,
        )
    return taken


WAITLIST_JOIN_BODY = '{"quantity":1}'
# Connections of the cancellations run: one cancel_booking call in flight on each.
CANCEL_CONNECTIONS = 16


async def waitlist_rush(world: World, server: Server, customers: Path, *, tickets: int,
                        waiting: int, cancellations: int, connections: int, threads: int,
                        duration: float, limit: float) -> dict[str, Any]:
    """The moment a hot event sells out: `waiting` customers who were answered sold_out
    all join its waiting list at once, one transaction per request under the event's row
    lock, each customer once (wrk goes round them, and the load stops once every one of
    them is waiting). Read against the ceiling of the same run: booking attempts on the
    same sold-out event, every one answered 409 sold_out through the batched booking
    path (`duration` seconds before the joins and again after, the mean of the two).

    Then the returned tickets: `cancellations` bookings of the event cancelled through
    cancel_booking, each one's ticket offered to the next in line, against as many
    cancellations of another sold-out event nobody waits for, both from
    CANCEL_CONNECTIONS connections at once.

    The event has `tickets` tickets, booked through book_tickets by bench customers
    1..`tickets`; the customers joining are the next `waiting` lines of `customers`."""
    lines = (await asyncio.to_thread(customers.read_text)).splitlines()
    if len(lines) < tickets + waiting:
        raise RuntimeError(f"waitlist_rush needs {tickets + waiting} customers")
    joiners = world.lines_file("rush-customers.tsv", lines[tickets:tickets + waiting])
    [event, plain] = await world.insert_events(2, tickets)
    for sold in (event, plain):
        taken = await take_tickets(world, sold, tickets, hold=False, request_id="bench-rush")
        if taken != tickets or await world.available(sold) != 0:
            raise Failed(f"waitlist rush: {taken} of {tickets} tickets booked to sell out")
    [kind] = await world.db.fetch(
        "SELECT id FROM ticket_types WHERE event_id = $1", event
    )
    ticket_type = kind["id"]
    server_pids = [server.proc.pid]

    async def costs(run: Callable[[], Awaitable[dict[str, Any]]], count: Callable[
            [dict[str, Any]], int]) -> dict[str, Any]:
        before = cpu_seconds(server_pids), cpu_seconds(postgres_pids())
        result = await run()
        done = count(result)
        per = 1000 / done if done else 0.0
        result["server_cpu_ms_per_request"] = cpu_used(before[0], cpu_seconds(server_pids)) * per
        result["postgres_cpu_ms_per_request"] = cpu_used(
            before[1], cpu_seconds(postgres_pids())) * per
        return result

    attempts = world.paths_file("rush-sold-out", [event])

    async def sold_out_attempts() -> dict[str, Any]:
        result = await run_wrk(server.url, attempts, connections=connections,
                               duration=duration, threads=threads, tokens_file=joiners,
                               body=BODY)
        if set(result["statuses"]) != {"409"}:
            raise Failed(f"waitlist rush: booking a sold-out event answered "
                         f"{result['statuses']}")
        refused = result["statuses"]["409"]
        return {"attempts_per_s": refused / (result["duration_us"] / 1e6),
                "attempts": refused, **latency_ms(result)}

    def attempted(result: dict[str, Any]) -> int:
        return int(result["attempts"])

    before = await costs(sold_out_attempts, attempted)

    async def listed() -> bool:
        count: int = await world.db.fetchval(
            "SELECT waiting FROM ticket_types WHERE id = $1", ticket_type
        )
        return count >= waiting

    async def joins() -> dict[str, Any]:
        # Once every customer waits, the answers already decided get a second to reach
        # wrk; the requests sent meanwhile are customers' second tries (409).
        result = await run_wrk(server.url, world.paths_file("rush-join", [event], "waitlist"),
                               connections=connections, duration=limit, threads=threads,
                               tokens_file=joiners, body=WAITLIST_JOIN_BODY, until=listed,
                               settle=1.0)
        return {**latency_ms(result), "statuses": result["statuses"],
                "socket_errors": result["errors"]}

    joined = await costs(joins, lambda _: waiting)
    after = await costs(sold_out_attempts, attempted)
    created = joined["statuses"].get("201", 0)
    spans = await world.db.fetch(
        "SELECT q, count(*) AS n, extract(epoch FROM max(created_at) - min(created_at))::float8"
        "       AS span"
        "  FROM (SELECT created_at, ntile(4) OVER (ORDER BY seq) AS q FROM waitlist_entries"
        "         WHERE event_id = $1) e GROUP BY q ORDER BY q",
        event,
    )
    entries = sum(row["n"] for row in spans)
    span = await world.db.fetchval(
        "SELECT extract(epoch FROM max(created_at) - min(created_at))::float8"
        "  FROM waitlist_entries WHERE event_id = $1", event,
    )
    if not (entries == waiting == created) or set(joined["statuses"]) - {"201", "409"}:
        raise Failed(f"waitlist rush: {waiting} customers joined, {entries} entries, "
                     f"answers {joined['statuses']}")
    await check_waitlist(world, event, ticket_type, waiting=waiting, offered=0,
                         available=0)
    position_ms = await entry_ms(world, event)

    async def cancel_all(of: uuid.UUID) -> dict[str, Any]:
        rows = await world.db.fetch(
            "SELECT b.id, b.user_id FROM bookings b JOIN bench_customers c ON c.id = b.user_id"
            " WHERE b.event_id = $1 AND b.status = 'confirmed' ORDER BY c.n LIMIT $2",
            of, cancellations,
        )
        queue: asyncio.Queue[tuple[uuid.UUID, uuid.UUID]] = asyncio.Queue()
        for row in rows:
            queue.put_nowait((row["id"], row["user_id"]))
        outcomes: dict[str, int] = {}
        pool = await create_pool(world.database_url, CANCEL_CONNECTIONS, CANCEL_CONNECTIONS)
        try:
            async def cancel() -> None:
                async with pool.acquire() as conn:
                    while not queue.empty():
                        booking, user = queue.get_nowait()
                        outcome = await conn.fetchval(
                            "SELECT outcome FROM cancel_booking($1, $2, 'bench-rush')",
                            booking, user,
                        )
                        outcomes[outcome] = outcomes.get(outcome, 0) + 1

            started = time.perf_counter()
            await asyncio.gather(*(cancel() for _ in range(CANCEL_CONNECTIONS)))
            seconds = time.perf_counter() - started
        finally:
            await pool.close()
        if outcomes != {"cancelled": cancellations}:
            raise Failed(f"waitlist rush: {cancellations} cancellations answered {outcomes}")
        return {"cancellations_per_s": cancellations / seconds, "seconds": seconds}

    plain_run = await cancel_all(plain)
    if await world.available(plain) != cancellations:
        raise Failed(f"waitlist rush: {cancellations} cancellations with nobody waiting left "
                     f"{await world.available(plain)} tickets on sale")
    offers_run = await cancel_all(event)
    await check_waitlist(world, event, ticket_type, waiting=waiting - cancellations,
                         offered=cancellations, available=0)
    return {
        "tickets": tickets,
        "waiting": waiting,
        "joins_per_s": waiting / span if span else 0.0,
        "joins": joined,
        "sold_out_before": before,
        "sold_out_after": after,
        "sold_out_per_s": (before["attempts_per_s"] + after["attempts_per_s"]) / 2,
        "sold_out_p99_ms": (before["p99_ms"] + after["p99_ms"]) / 2,
        "quarters_joins_per_s": [row["n"] / row["span"] if row["span"] else None
                                 for row in spans],
        "position_ms": position_ms,
        "cancellations": cancellations,
        "plain_cancellations": plain_run,
        "offering_cancellations": offers_run,
    }


async def check_waitlist(world: World, event: uuid.UUID, ticket_type: uuid.UUID, *,
                         waiting: int, offered: int, available: int) -> None:
    """Fail the run unless `event`'s list is as it should be: `waiting` entries waiting
    (the type's count agrees), the first `offered` by order of joining offered, each with
    a live hold of its ticket and its offer in the outbox, nothing reserved, `available`
    tickets on sale; the waiting entries' positions 1..`waiting` in order of joining
    (every entry's, up to 200 of them; else 200 spread over the list, and the
    last); and eventbook's consistency report (`eventbook check`) empty."""
    row = await world.db.fetchrow(
        "SELECT e.available_tickets, t.waiting, t.reserved,"
        " (SELECT count(*) FROM waitlist_entries w WHERE w.ticket_type_id = t.id"
        "   AND w.status = 'waiting') AS entries_waiting,"
        " (SELECT count(*) FROM waitlist_entries w JOIN holds h ON h.id = w.hold_id"
        "   WHERE w.ticket_type_id = t.id AND w.status = 'offered' AND h.status = 'held'"
        "     AND h.quantity = 1) AS offers_live,"
        " (SELECT count(*) FROM outbox o WHERE o.kind = 'waitlist_offer'"
        "   AND (o.payload->>'hold_id')::uuid IN (SELECT w.hold_id FROM waitlist_entries w"
        "                                       WHERE w.ticket_type_id = t.id)) AS mails,"
        " (SELECT coalesce(max(seq), 0) FROM waitlist_entries w"
        "   WHERE w.ticket_type_id = t.id AND w.status = 'offered')"
        "  < (SELECT coalesce(min(seq), 0) FROM waitlist_entries w"
        "      WHERE w.ticket_type_id = t.id AND w.status = 'waiting')"
        "  OR NOT EXISTS (SELECT FROM waitlist_entries w WHERE w.ticket_type_id = t.id"
        "                  AND w.status = 'waiting') AS in_order"
        " FROM events e JOIN ticket_types t ON t.event_id = e.id WHERE t.id = $1",
        ticket_type,
    )
    assert row is not None
    expected = {"available_tickets": available, "waiting": waiting, "reserved": 0,
                "entries_waiting": waiting, "offers_live": offered, "mails": offered,
                "in_order": True}
    if dict(row) != expected:
        raise Failed(f"waitlist rush: the list is {dict(row)}, not {expected}")
    # Each position is counted over the entries ahead: a sample keeps this in seconds.
    wrong = await world.db.fetch(
        "WITH waiting AS ("
        "  SELECT w, row_number() OVER (ORDER BY w.seq) AS rank FROM waitlist_entries w"
        "   WHERE w.event_id = $1 AND w.status = 'waiting'"
        " ), sample AS MATERIALIZED ("
        "  SELECT * FROM waiting WHERE (rank - 1) % greatest($2 / 200, 1) = 0 OR rank = $2)"
        " SELECT rank, s.position FROM sample, waitlist_entry_shown(sample.w) s"
        "  WHERE s.position IS DISTINCT FROM rank LIMIT 10",
        event, waiting, timeout=120,
    )
    if wrong:
        raise Failed(f"waitlist rush: positions shown are not 1..{waiting} in order of "
                     f"joining: {[dict(r) for r in wrong]}")
    async with world.db.acquire() as conn:
        report = await consistency_report(conn, 1e9, 1e9)
    found = {kind: rows for kind, rows in report.items() if rows}
    if found:
        raise Failed(f"waitlist rush: eventbook check reports {found}")


async def entry_ms(world: World, event: uuid.UUID) -> dict[str, float]:
    """What the customer's view of an entry (the query every join answers with, its
    position counted) takes for the first and for the last of the list: the median of
    20 runs, in ms."""
    ends = await world.db.fetchrow(
        "SELECT (array_agg(id ORDER BY seq))[1] AS first, (array_agg(user_id ORDER BY seq))[1]"
        "       AS first_user, (array_agg(id ORDER BY seq DESC))[1] AS last,"
        "       (array_agg(user_id ORDER BY seq DESC))[1] AS last_user"
        "  FROM waitlist_entries WHERE event_id = $1 AND status = 'waiting'",
        event,
    )
    assert ends is not None
    timings: dict[str, float] = {}
    async with world.db.acquire() as conn:
        for end in ("first", "last"):
            runs = []
            for _ in range(20):
                started = time.perf_counter()
                await conn.fetchrow(WAITLIST_ENTRY, ends[end], ends[f"{end}_user"])
                runs.append((time.perf_counter() - started) * 1000)
            timings[end] = statistics.median(runs)
    return timings


async def spread(world: World, server: Server, customers: Path, *, events: int,
                 connections: int, duration: float, threads: int) -> dict[str, Any]:
    """The same load over `events` events (round robin), none of which sells out."""
    ids = await world.insert_events(events, UNBOUNDED)
    return await booking_run(world, server.url, "spread", ids, customers,
                             connections=connections, duration=duration, threads=threads,
                             server_pid=server.proc.pid)


async def deployed(world: World, name: str, sale: Callable[[], Awaitable[dict[str, Any]]],
                   *, limit: float = 120, profile: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """`sale` (a flash sale or spread against the web process) as deployed: an `eventbook
    worker` running every actor (mail latency 0) confirms the bookings while they are
    made. Beside the sale's own figures: each booking's confirmation lag, from its
    transaction (created_at) to its mail recorded as sent (confirmed_at), and the
    worker's CPU. wrk tells no request's answer time, so the lag is counted from the
    transaction, a few milliseconds before the 201: a bound above the lag from the 201
    that the lag scenario measures. With `profile`, py-spy samples the worker."""
    await forget_backlog(world)
    actors = await worker(world, name, EVENTBOOK_MAIL_LATENCY_MS="0")
    try:
        since = await world.db.fetchval("SELECT clock_timestamp()")
        cpu_before = cpu_seconds([actors.proc.pid])
        sampling = (
            profiled(actors.proc.pid, world.logs / f"profile-{name}.txt", profile)
            if profile is not None else contextlib.nullcontext()
        )
        with sampling:
            result = await sale()
        ended = time.monotonic()
        deadline = ended + limit
        while True:
            pending = await world.db.fetchval(
                "SELECT count(*) FROM bookings WHERE created_at >= $1"
                " AND confirmation_status <> 'sent'", since,
            )
            if pending == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        caught_up_s = time.monotonic() - ended
        worker_cpu = cpu_used(cpu_before, cpu_seconds([actors.proc.pid]))
        rows = await world.db.fetch(
            "SELECT extract(epoch FROM confirmed_at - created_at)::float8 AS lag"
            "  FROM bookings WHERE created_at >= $1 AND confirmation_status = 'sent'", since,
        )
    finally:
        actors.stop()
    lags = sorted(max(row["lag"], 0.0) * 1000 for row in rows)
    bookings = len(lags) + pending
    return {
        **result,
        "confirmed": len(lags),
        "unconfirmed": pending,
        "lag_p50_ms": percentile(lags, 50),
        "lag_p99_ms": percentile(lags, 99),
        "lag_max_ms": lags[-1] if lags else 0.0,
        # From the sale's last answer until every booking of it was confirmed.
        "caught_up_s": caught_up_s,
        "worker_cpu_ms_per_booking": worker_cpu * 1000 / bookings if bookings else None,
    }


async def forget_backlog(world: World) -> int:
    """Drop the outbox rows the load runs left, so a worker started now measures only
    its own scenario's work (those bookings stay pending; they are bench data)."""
    status = await world.db.execute("DELETE FROM outbox")
    return int(status.split()[-1])


async def worker(world: World, name: str, **settings: str) -> Process:
    """`eventbook worker` with every actor (or those EVENTBOOK_ACTORS names), once it runs
    them."""
    env = environment(**world.server_env(), **settings)
    child = Process(["worker"], env, world.logs / f"{name}.log", ROOT)
    await asyncio.to_thread(child.wait_for_output, "worker_running")
    return child


async def paced_bookings(world: World, url: str, event: uuid.UUID, customers: Path,
                         rate: float, duration: float) -> dict[str, Any]:
    """Book `event` at `rate` for `duration` s from the paced client (bench.paced), in a
    process of its own; its account of the run."""
    out = world.directory / "paced.json"
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.paced", url, f"/api/v1/events/{event}/bookings",
        str(customers), str(rate), str(duration), str(out), cwd=ROOT,
    )
    if await client.wait() != 0:
        raise RuntimeError("the paced client failed")
    paced: dict[str, Any] = json.loads(out.read_text())
    return paced


async def confirmation_lag(world: World, url: str, customers: Path, *, rate: float,
                           duration: float, profile: dict[str, Any] | None = None
                           ) -> dict[str, Any]:
    """Bookings at a steady `rate` from a paced client in its own process, with an
    `eventbook worker` running every actor (mail latency 0): the time from each 201 to
    its booking's confirmed_at (the confirmation recorded as sent)."""
    await forget_backlog(world)
    [event] = await world.insert_events(1, UNBOUNDED)
    actors = await worker(world, "worker-lag", EVENTBOOK_MAIL_LATENCY_MS="0")
    try:
        sampling = (
            profiled(actors.proc.pid, world.logs / "profile-lag-worker.txt", profile)
            if profile is not None else contextlib.nullcontext()
        )
        with sampling:
            paced = await paced_bookings(world, url, event, customers, rate, duration)
        ids = [uuid.UUID(key) for key in paced["answered"]]
        answered_at = list(paced["answered"].values())
        deadline = time.monotonic() + 120
        while True:
            pending = await world.db.fetchval(
                "SELECT count(*) FROM bookings WHERE id = ANY($1)"
                " AND confirmation_status <> 'sent'",
                ids,
            )
            if pending == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        rows = await world.db.fetch(
            "SELECT extract(epoch FROM b.confirmed_at)::float8 - t.answered AS lag"
            "  FROM unnest($1::uuid[], $2::float8[]) AS t(id, answered)"
            "  JOIN bookings b ON b.id = t.id WHERE b.confirmation_status = 'sent'",
            ids, answered_at,
        )
    finally:
        actors.stop()
    # confirmed_at is read from PostgreSQL's clock and the 201 from the client's: the same
    # machine's clock, so a confirmation recorded before the 201 arrived counts as 0.
    lags = sorted(max(row["lag"], 0.0) * 1000 for row in rows)
    return {
        "rate": rate,
        "achieved_rate": paced["sent"] / paced["seconds"],
        "bookings": len(ids),
        "confirmed": len(lags),
        "unconfirmed": pending,
        "p50_ms": percentile(lags, 50),
        "p99_ms": percentile(lags, 99),
        "max_ms": lags[-1] if lags else 0.0,
        "statuses": paced["statuses"],
        "client_worst_lag_ms": paced["client_worst_lag_ms"],
    }


async def webhook_lag(world: World, url: str, customers: Path, *, rate: float,
                      duration: float, split: bool = False) -> dict[str, Any]:
    """Bookings at a steady `rate` from the paced client, as in confirmation_lag, on an
    event whose organizer has one webhook endpoint wanting them: a receiver in this
    process that verifies each message with standardwebhooks. An `eventbook worker`
    runs every actor (mail latency 0), so the webhooks go out beside the confirmations of
    the same bookings. Both lags are taken from the change (the booking's transaction,
    the delivery's occurred_at): the webhook's to its first verified arrival, the
    confirmation's to its confirmed_at; the webhook's from the 201 as well.

    With `split`, the webhooks actor runs in an `eventbook worker --actors webhooks` of
    its own and every other actor in a second worker, as a deployment gives webhooks
    their own process (and core) once one worker cannot keep up with both."""
    await forget_backlog(world)
    [event] = await world.insert_events(1, UNBOUNDED)
    receiver = WebhookReceiver(new_secret())
    async with receiver.serving() as hook:
        # Only this event's bookings: the other scenarios' events write no webhook rows.
        endpoint = await world.db.fetchval(
            "INSERT INTO webhook_endpoints (organizer_id, url, event_types, event_ids, secret)"
            " VALUES ($1, $2, '{booking.created}', $3, $4) RETURNING id",
            world.organizer, hook, [event], receiver.secret,
        )
        settings = {"EVENTBOOK_MAIL_LATENCY_MS": "0", "EVENTBOOK_WEBHOOK_ALLOW_HTTP": "true",
                    "EVENTBOOK_WEBHOOK_ALLOW_PRIVATE": "true"}
        if split:
            others = ",".join(name for name in ACTOR_NAMES if name != "webhooks")
            workers = [
                await worker(world, "worker-mails", EVENTBOOK_ACTORS=others, **settings),
                await worker(world, "worker-webhooks-only", EVENTBOOK_ACTORS="webhooks",
                             **settings),
            ]
        else:
            workers = [await worker(world, "worker-webhooks", **settings)]
        pids = [actors.proc.pid for actors in workers]
        try:
            started, cpu_before = time.monotonic(), cpu_seconds(pids)
            paced = await paced_bookings(world, url, event, customers, rate, duration)
            ids = [uuid.UUID(key) for key in paced["answered"]]
            wanted = {f"msg_booking.created_{booking}" for booking in ids}
            # Generous: what is slow is measured, only what never comes is missing.
            deadline = time.monotonic() + max(120.0, len(ids) / 50)
            while time.monotonic() < deadline:
                unconfirmed = await world.db.fetchval(
                    "SELECT count(*) FROM bookings WHERE id = ANY($1)"
                    " AND confirmation_status <> 'sent'",
                    ids,
                )
                if unconfirmed == 0 and wanted <= receiver.arrived.keys():
                    break
                await asyncio.sleep(0.2)
            worker_cpu = cpu_used(cpu_before, cpu_seconds(pids))
            busy_s = time.monotonic() - started
            deliveries = await world.db.fetch(
                "SELECT message_id, status, attempts,"
                "       extract(epoch FROM occurred_at)::float8 AS occurred"
                "  FROM webhook_deliveries WHERE endpoint_id = $1",
                endpoint,
            )
            confirmations = await world.db.fetch(
                "SELECT extract(epoch FROM confirmed_at - created_at)::float8 AS lag"
                "  FROM bookings WHERE id = ANY($1) AND confirmation_status = 'sent'",
                ids,
            )
        finally:
            for actors in workers:
                actors.stop()
            await world.db.execute("DELETE FROM webhook_endpoints WHERE id = $1", endpoint)
    if receiver.refused:
        raise Failed(f"{receiver.refused} webhook requests did not verify")
    delivered = [row for row in deliveries if row["message_id"] in wanted
                 and row["message_id"] in receiver.arrived]
    arrivals = [receiver.arrived[row["message_id"]] for row in delivered]
    # Both clocks are this machine's: an arrival a hair before the commit counts as 0.
    lags = sorted(max(receiver.arrived[row["message_id"]] - row["occurred"], 0.0) * 1000
                  for row in delivered)
    # From the 201 too, as confirmation_lag measures: the two scenarios' p99 compare.
    answered = {f"msg_booking.created_{booking}": at for booking, at in paced["answered"].items()}
    after_answer = sorted(max(receiver.arrived[row["message_id"]]
                              - answered[row["message_id"]], 0.0) * 1000 for row in delivered)
    confirmed = sorted(max(row["lag"], 0.0) * 1000 for row in confirmations)
    span = max(arrivals) - min(arrivals) if len(arrivals) > 1 else 0.0
    return {
        "rate": rate,
        "achieved_rate": paced["sent"] / paced["seconds"],
        "bookings": len(ids),
        "deliveries": len(deliveries),
        "verified": len(delivered),
        "undelivered": len(wanted - receiver.arrived.keys()),
        "repeats": receiver.repeats,
        "retried": sum(1 for row in deliveries if row["attempts"] > 1),
        "delivered_per_s": len(arrivals) / span if span else 0.0,
        "p50_ms": percentile(lags, 50),
        "p95_ms": percentile(lags, 95),
        "p99_ms": percentile(lags, 99),
        "max_ms": lags[-1] if lags else 0.0,
        "p99_from_answer_ms": percentile(after_answer, 99),
        "confirmation_p50_ms": percentile(confirmed, 50),
        "confirmation_p99_ms": percentile(confirmed, 99),
        "unconfirmed": len(ids) - len(confirmed),
        # The worker's CPU over the run (its share of one core), until all was delivered.
        "workers": len(workers),
        "worker_cpu_share": worker_cpu / busy_s,
        "worker_cpu_ms_per_booking": worker_cpu * 1000 / len(ids) if ids else None,
        "statuses": paced["statuses"],
        "client_worst_lag_ms": paced["client_worst_lag_ms"],
    }


async def attendee_event(world: World, attendees: int) -> uuid.UUID:
    """An event with `attendees` customers holding one confirmed ticket each."""
    [event] = await world.insert_events(1, attendees)
    users = await seed.insert_users(world.db, attendees, name="Bench")
    await seed.insert_attendees(world.db, event, users)
    return event


async def fan_out(world: World, url: str, event: uuid.UUID, attendees: int, *,
                  latencies_ms: tuple[int, ...], limit: float) -> dict[str, Any]:
    """One PATCH of the title of an event with `attendees` attendees: seconds until every
    event_updated mail is recorded and sent, for each simulated mail latency, with the
    actors in an `eventbook worker` process (its peak RSS)."""
    await forget_backlog(world)
    assert world.organizer is not None
    token = world.tokens().issue(world.organizer, "organizer")
    headers = {"Authorization": f"Bearer {token}"}
    runs: dict[str, Any] = {}
    for latency in latencies_ms:
        actors = await worker(world, f"worker-fanout-{latency}",
                              EVENTBOOK_MAIL_LATENCY_MS=str(latency))
        try:
            async with aiohttp.ClientSession(url) as session:
                started = time.monotonic()
                async with session.patch(
                    f"/api/v1/events/{event}", json={"title": f"Changed for {latency} ms"},
                    headers=headers,
                ) as answer:
                    if answer.status != 200:
                        raise RuntimeError(f"PATCH answered {answer.status}: {await answer.text()}")
                    version = (await answer.json())["version"]
            recorded_s = sent_s = None
            deadline = started + limit
            while time.monotonic() < deadline:
                row = await world.db.fetchrow(
                    "SELECT count(*) AS recorded, count(sent_at) AS sent FROM notifications"
                    " WHERE event_id = $1 AND event_version = $2 AND kind = 'event_updated'",
                    event, version,
                )
                assert row is not None
                now = time.monotonic() - started
                if recorded_s is None and row["recorded"] >= attendees:
                    recorded_s = now
                if row["sent"] >= attendees:
                    sent_s = now
                    break
                await asyncio.sleep(0.25)
            runs[str(latency)] = {
                "mail_latency_ms": latency,
                "recorded_s": recorded_s,
                "sent_s": sent_s,
                "sent": row["sent"],
                "mails_per_s": attendees / sent_s if sent_s else row["sent"] / limit,
                "worker_peak_rss_mb": actors.peak_rss_mb(),
            }
        finally:
            actors.stop()
    return {"attendees": attendees, "runs": runs}


# The broadest searches the bounds allow: two letters that begin a word of most events.
FLOOD_SEARCHES = ("th", "mu", "co", "an", "th mu", "co an", "fe", "ni")


async def floods(world: World, server: Server, customers: Path, *, events: int,
                 listings: int, connections: int, threads: int, duration: float
                 ) -> dict[str, Any]:
    """Booking load as in `spread`, alone and beside each flood, with `listings` events
    to search: booking p50 / p99 under a flood against the same load alone (measured
    before and after the floods). Each flood is closed-loop wrk:

    - search, anonymous: 24 connections of the broadest searches allowed, from one
      address (the per-address browsing limit answers most of them 429);
    - search, signed in: the same with a different customer's token each request, as
      an attacker with many accounts (no per-user limit holds it; the search
      connections and the search timeout do);
    - scrape, no token: 16 connections of GET /metrics without the token (401);
    - scrape, with token: the same with the metrics token, as a scraper gone wild.
    """
    await world.insert_listings(listings)
    ids = await world.insert_events(events, UNBOUNDED)
    searches = world.lines_file(
        "search.paths", [f"/api/v1/events?q={q.replace(' ', '+')}" for q in FLOOD_SEARCHES]
    )
    scrape = world.lines_file("scrape.paths", ["/metrics"])
    metrics_token = world.lines_file("metrics-token.tsv", [f"{world.metrics_token}\t-"])
    floods_: dict[str, tuple[Path, Path | None, int]] = {
        "search_anonymous": (searches, None, 24),
        "search_signed_in": (searches, customers, 24),
        "scrape_no_token": (scrape, None, 16),
        "scrape_with_token": (scrape, metrics_token, 16),
    }

    async def bookings(name: str) -> dict[str, Any]:
        return await booking_run(world, server.url, f"floods-{name}", ids, customers,
                                 connections=connections, duration=duration,
                                 threads=threads, server_pid=server.proc.pid)

    runs: dict[str, Any] = {"alone_before": await bookings("alone-before")}
    for name, (paths, tokens, flood_connections) in floods_.items():
        done = asyncio.Event()
        flood = asyncio.create_task(run_wrk(
            server.url, paths, connections=flood_connections, duration=duration + 30,
            threads=threads, method="GET", tokens_file=tokens, until=_waiter(done),
        ))
        await asyncio.sleep(1)  # the flood is at full speed before the bookings start
        try:
            run = await bookings(name)
        finally:
            done.set()
            flooded = await flood
        run["flood"] = {
            "connections": flood_connections,
            "requests_per_s": flooded["requests"] / (flooded["duration_us"] / 1e6),
            **latency_ms(flooded),
            "statuses": flooded["statuses"],
        }
        runs[name] = run
    runs["alone_after"] = await bookings("alone-after")
    alone = [runs["alone_before"], runs["alone_after"]]
    return {
        "listings": listings,
        "events": events,
        "alone_p50_ms": sum(run["p50_ms"] for run in alone) / 2,
        "alone_p99_ms": sum(run["p99_ms"] for run in alone) / 2,
        "runs": runs,
    }


def _waiter(event: asyncio.Event) -> Callable[[], Awaitable[bool]]:
    async def is_set() -> bool:
        return event.is_set()

    return is_set
