"""One measured run of booking load: wrk against a server, the rate read from the database."""

from __future__ import annotations

import statistics
import uuid
from pathlib import Path
from typing import Any

from bench.processes import cpu_seconds, cpu_used, family, postgres_pids
from bench.world import World
from bench.wrk import run_wrk

BODY = '{"quantity":1}'


def latency_ms(result: dict[str, Any]) -> dict[str, float]:
    return {
        "p50_ms": result["p50_us"] / 1000,
        "p90_ms": result["p90_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
        "max_ms": result["max_us"] / 1000,
    }


async def booking_run(
    world: World,
    url: str,
    name: str,
    events: list[uuid.UUID],
    customers: Path,
    *,
    connections: int,
    duration: float,
    threads: int,
    until_sold_out: bool = False,
    server_pid: int | None = None,
    body: str = BODY,
    holds: bool = False,
    refusals_expected: bool = False,
    settle: float = 0.2,
) -> dict[str, Any]:
    """Book `body` (1 ticket, unless "@FILE" names bodies to go round) a request on
    `events` (round robin) for `duration` seconds, or until the one event in `events` is
    sold out. With `holds`, each purchase is a hold then its confirmation by the same
    customer, and sold out means no ticket left and none held. bookings_per_s is the
    bookings the database holds divided by the time from the first booking (or hold) to
    the last booking, so wrk's start-up and the tail after the sell-out do not count.

    Until the sell-out, wrk stops at the first 409 (sold out), unless
    `refusals_expected`: a ticket type's quota runs out before the event, or holds are
    still to confirm when the last ticket is held. Then the sell-out seen in the
    database ends the run, `settle` seconds later."""
    paths = world.paths_file(name, events, "holds" if holds else "bookings")

    async def sold_out() -> bool:
        return await world.sold_out(events[0])

    # A server of several processes: the parent and every server process.
    server = family(server_pid) if server_pid else []
    before = cpu_seconds(server), cpu_seconds(postgres_pids())
    result = await run_wrk(
        url, paths, connections=connections, duration=duration, threads=threads,
        tokens_file=customers, body=body,
        stop_status=409 if until_sold_out and not refusals_expected else None,
        until=sold_out if until_sold_out else None, settle=settle, then_confirm=holds,
    )
    used = (cpu_used(before[0], cpu_seconds(server)),
            cpu_used(before[1], cpu_seconds(postgres_pids())))
    sold = await world.sold(events)
    per_booking = 1000 / sold["bookings"] if sold["bookings"] else 0.0
    return {
        # CPU per booking is what the shared machine's noise disturbs least.
        "server_cpu_ms_per_booking": used[0] * per_booking if server else None,
        "postgres_cpu_ms_per_booking": used[1] * per_booking,
        "bookings_per_s": sold["bookings"] / sold["span"] if sold["span"] else 0.0,
        "bookings": sold["bookings"],
        "tickets": sold["tickets"],
        "seconds": sold["span"],
        **latency_ms(result),
        "statuses": result["statuses"],
        "socket_errors": result["errors"],
        "requests": result["requests"],
    }


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0..100) by linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[int(p * 10) - 1]
