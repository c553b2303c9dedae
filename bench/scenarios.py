"""The scenarios, each against real `eventbook` processes: bookings on one hot event
(flash) and over many (spread), the confirmation lag, one change fanned out to every
attendee, and booking load under floods of searches and scrapes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench.ceilings import UNBOUNDED
from bench.profile import profiled
from bench.runs import booking_run, latency_ms, percentile
from bench.world import World
from bench.wrk import run_wrk
from eventbook.booking_batcher import MAX_BATCH
from tests import seed
from tests.processes import ROOT, Process, Server, environment


class Failed(Exception):
    """The run broke an invariant (oversold, a booking lost): a failed run, not a figure."""


async def flash_sale(world: World, server: Server, customers: Path, *,
                     capacity: int, connections: int, threads: int, limit: float
                     ) -> dict[str, Any]:
    """One event, `capacity` tickets, every connection booking 1 ticket a request for a
    new customer until the event is sold out."""
    [event] = await world.insert_events(1, capacity)
    result = await booking_run(world, server.url, "flash", [event], customers,
                               connections=connections, duration=limit, threads=threads,
                               until_sold_out=True, server_pid=server.proc.pid)
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
    taken = 0
    # Calls of the server's largest batch: a call of 1,000 holds takes seconds.
    for start in range(0, holds, MAX_BATCH):
        size = min(MAX_BATCH, holds - start)
        taken += await world.db.fetchval(
            "SELECT count(*) FILTER (WHERE outcome = 'created') FROM book_tickets("
            " array_fill($1::uuid, $3),"
            " (SELECT array_agg(id ORDER BY n) FROM bench_customers"
            "   WHERE n > $2 AND n <= $2 + $4),"
            " array_fill(true, $3), array_fill(1, $3), array_fill(NULL::text, $3),"
            " array_fill('bench'::text, $3), array_fill('bench-expiry'::text, $3),"
            " array_fill(NULL::uuid, $3), array_fill(1, $3), 600, NULL)",
            event, start, [size], size,
        )
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


async def spread(world: World, server: Server, customers: Path, *, events: int,
                 connections: int, duration: float, threads: int) -> dict[str, Any]:
    """The same load over `events` events (round robin), none of which sells out."""
    ids = await world.insert_events(events, UNBOUNDED)
    return await booking_run(world, server.url, "spread", ids, customers,
                             connections=connections, duration=duration, threads=threads,
                             server_pid=server.proc.pid)


async def forget_backlog(world: World) -> int:
    """Drop the outbox rows the load runs left, so a worker started now measures only
    its own scenario's work (those bookings stay pending; they are bench data)."""
    status = await world.db.execute("DELETE FROM outbox")
    return int(status.split()[-1])


async def worker(world: World, name: str, **settings: str) -> Process:
    """`eventbook worker` with every actor, once it runs them."""
    env = environment(**world.server_env(), **settings)
    child = Process(["worker"], env, world.logs / f"{name}.log", ROOT)
    await asyncio.to_thread(child.wait_for_output, "worker_running")
    return child


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
        out = world.directory / "paced.json"
        sampling = (
            profiled(actors.proc.pid, world.logs / "profile-lag-worker.txt", profile)
            if profile is not None else contextlib.nullcontext()
        )
        with sampling:
            client = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.paced", url,
                f"/api/v1/events/{event}/bookings", str(customers), str(rate), str(duration),
                str(out), cwd=ROOT,
            )
            if await client.wait() != 0:
                raise RuntimeError("the paced client failed")
        paced = json.loads(out.read_text())
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
