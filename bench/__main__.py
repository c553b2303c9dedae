"""python -m bench: the ceilings and the scenarios in one run, one table, one JSON file in
bench/results/.

Everything runs on this machine: private PostgreSQL and Redis in a temporary directory,
`eventbook serve --no-actors` (the Procfile's web process, default settings and a
metrics token) as a real child process, `eventbook worker` beside it where actors are
needed, wrk (installed with apt-get when missing) and pgbench as the load. Figures from
a shared machine are noisy, so each one is printed as a ratio to a ceiling measured in
the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import ceilings, processes, report, scenarios
from bench.profile import profiled
from bench.profile import report as profile_report
from bench.world import World
from bench.wrk import ensure_wrk
from tests.processes import Server, environment

SCENARIOS = ("flash", "flash_types", "hold_confirm", "expiry", "waitlist", "spread",
             "deployed", "lag", "webhooks", "fanout", "floods")
# The scenarios run again for every count of --processes past the first.
SALES = {"flash", "spread", "deployed"}
# The scenarios whose figures are read against the HTTP, naive and pgbench ceilings.
BOOKING_LOADS = {"flash", "flash_types", "hold_confirm", "spread", "waitlist"}
# The tickets of the waiting-list rush's sold-out event (at least its cancellations).
RUSH_TICKETS = 2_000


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated subset of {','.join(SCENARIOS)} (default all)")
    parser.add_argument("--quick", action="store_true",
                        help="short runs (about 3 minutes in all): --duration 4 "
                             "--lag-duration 4 --webhook-duration 5 --capacity 10000 "
                             "--attendees 20000 --waiting 10000")
    parser.add_argument("--duration", type=float, default=10,
                        help="seconds of each fixed-length load run (default 10)")
    parser.add_argument("--connections", type=int, default=64, help="default 64")
    parser.add_argument("--threads", type=int, default=1,
                        help="wrk threads (default 1: leave the cores to the server)")
    parser.add_argument("--capacity", type=int, default=20_000,
                        help="flash-sale tickets (default 20000)")
    parser.add_argument("--events", type=int, default=100, help="spread's events (default 100)")
    parser.add_argument("--lag-rate", type=float, default=500,
                        help="bookings/s of the confirmation-lag run (default 500)")
    parser.add_argument("--lag-duration", type=float, default=10, help="default 10 s")
    parser.add_argument("--webhook-rate", type=float, default=500,
                        help="bookings/s of the webhooks run, each delivered to one "
                             "endpoint (default 500)")
    parser.add_argument("--webhook-duration", type=float, default=20, help="default 20 s")
    parser.add_argument("--attendees", type=int, default=100_000, help="fan-out (default 100000)")
    parser.add_argument("--expiring", type=int, default=10_000,
                        help="holds of the expiry run, all due at once (default 10000)")
    parser.add_argument("--waiting", type=int, default=20_000,
                        help="customers joining the waiting list of the sold-out event at "
                             "once (default 20000)")
    parser.add_argument("--cancellations", type=int, default=1_000,
                        help="bookings cancelled, each ticket offered to the next waiting "
                             "(default 1000)")
    parser.add_argument("--listings", type=int, default=100_000,
                        help="events the floods scenario's searches look through "
                             "(default 100000)")
    parser.add_argument("--processes", default="1,2", type=counts,
                        help="server processes (serve --processes N) of the web process, "
                             "comma-separated: flash, spread and deployed run with each "
                             "(deployed with the first only under --quick), the other "
                             "scenarios with the first (default 1,2)")
    parser.add_argument("--results", type=Path, default=report.ROOT / "bench" / "results",
                        help="where the JSON file goes (default bench/results)")
    parser.add_argument("--profile", action="store_true",
                        help="sample the server with py-spy during flash and spread, and "
                             "the worker during lag and deployed (pip install py-spy "
                             "first)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (servers' data, logs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.lag_duration, args.webhook_duration = 4, 4, 5
        args.capacity, args.attendees, args.waiting = 10_000, 20_000, 10_000
    args.scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return args


def counts(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of process counts (1,2)")
    return values


def say(text: str) -> None:
    print(f"bench: {text}", flush=True)


def sampled(args: argparse.Namespace, server: Server, world: World,
            results: dict[str, Any], name: str) -> contextlib.AbstractContextManager[None]:
    if not args.profile:
        return contextlib.nullcontext()
    summary = results.setdefault("profiles", {}).setdefault(name, {})
    # Of several server processes, the first: the others do the same work.
    pids = processes.family(server.proc.pid)
    stem = name.removesuffix(" (server)").replace(",", "").replace(" ", "-")
    return profiled(pids[1] if len(pids) > 1 else pids[0],
                    world.logs / f"profile-{stem}.txt", summary)


async def measure(args: argparse.Namespace, world: World, results: dict[str, Any]) -> None:
    ceil: dict[str, Any] = results["ceilings"]
    scen: dict[str, Any] = results["scenarios"]
    load = {"connections": args.connections, "threads": args.threads}
    say("seeding customers")
    rush_tickets = max(RUSH_TICKETS, args.cancellations)
    customers = await world.customers_file(max(args.capacity + 5_000, args.expiring, 25_000,
                                               rush_tickets + args.waiting))
    wanted = set(args.scenarios)

    if wanted & BOOKING_LOADS:
        say(f"HTTP ceiling: bare aiohttp JSON handler, {args.duration:g} s")
        ceil["http"] = await ceilings.http_ceiling(world, customers, duration=args.duration,
                                                   **load)
        say(f"naive ceiling: bare aiohttp handler + one booking per call, {args.duration:g} s")
        ceil["naive"] = await ceilings.naive_ceiling(world, customers, duration=args.duration,
                                                     **load)
        say(f"pgbench: one booking per call on one event, {args.connections} clients")
        ceil["pgbench"] = await ceilings.pgbench_ceiling(
            world, connections=args.connections, duration=args.duration
        )

    by_processes: dict[str, Any] = results.setdefault("by_processes", {})
    first, *others = args.processes
    server = await web(world, first)
    try:
        by_processes[str(first)] = await sales(args, world, server, customers, results, first)
        scen.update(by_processes[str(first)])
        if "flash_types" in wanted:
            say(f"flash sale over 2 ticket types: 1 event, {args.capacity} tickets")
            with sampled(args, server, world, results, "flash_types (server)"):
                scen["flash_types"] = await scenarios.flash_types(
                    world, server, customers, capacity=args.capacity, limit=300, **load
                )
        if "hold_confirm" in wanted:
            say(f"hold then confirm: 1 event, {args.capacity} tickets")
            with sampled(args, server, world, results, "hold_confirm (server)"):
                scen["hold_confirm"] = await scenarios.hold_confirm(
                    world, server, customers, capacity=args.capacity, limit=300, **load
                )
        if "expiry" in wanted:
            say(f"expiry: {args.expiring} holds due at the same instant, holds actor in "
                "an eventbook worker")
            scen["expiry"] = await scenarios.expiry(world, holds=args.expiring, limit=60)
        if "waitlist" in wanted:
            say(f"waiting-list rush: {args.waiting} customers join the list of a sold-out "
                f"event at once; {args.cancellations} cancellations offered on")
            with sampled(args, server, world, results, "waitlist (server)"):
                scen["waitlist_rush"] = await scenarios.waitlist_rush(
                    world, server, customers, tickets=rush_tickets, waiting=args.waiting,
                    cancellations=min(args.cancellations, args.waiting),
                    duration=args.duration, limit=300, **load,
                )
        if "lag" in wanted:
            say(f"confirmation lag: {args.lag_rate:g} bookings/s for {args.lag_duration:g} s")
            scen["confirmation_lag"] = await scenarios.confirmation_lag(
                world, server.url, customers, rate=args.lag_rate, duration=args.lag_duration,
                profile=results.setdefault("profiles", {}).setdefault("lag (worker)", {})
                if args.profile else None,
            )
        if "webhooks" in wanted:
            say(f"webhooks: {args.webhook_rate:g} bookings/s for {args.webhook_duration:g} s, "
                "each delivered to a receiver verifying it")
            scen["webhooks"] = await scenarios.webhook_lag(
                world, server.url, customers, rate=args.webhook_rate,
                duration=args.webhook_duration,
            )
            say("webhooks again, the webhooks actor in a worker of its own")
            scen["webhooks_split"] = await scenarios.webhook_lag(
                world, server.url, customers, rate=args.webhook_rate,
                duration=args.webhook_duration, split=True,
            )
        if "fanout" in wanted:
            say(f"fan-out: seeding an event with {args.attendees} attendees")
            event = await scenarios.attendee_event(world, args.attendees)
            say("fan-out floor: one INSERT ... SELECT")
            ceil["fanout_floor"] = await ceilings.fanout_floor(world, event)
            say("fan-out: one PATCH, mail latency 0 and 50 ms")
            scen["fan_out"] = await scenarios.fan_out(
                world, server.url, event, args.attendees, latencies_ms=(0, 50), limit=300
            )
        if "floods" in wanted:
            say(f"floods: seeding {args.listings} events to search; booking load alone, "
                f"beside search and scrape floods, alone again ({args.duration:g} s each)")
            scen["floods"] = await scenarios.floods(
                world, server, customers, events=args.events, listings=args.listings,
                duration=args.duration, **load,
            )
    finally:
        results["server_peak_rss_mb"] = server.peak_rss_mb()
        server.stop()
    for count in others if wanted & SALES else []:
        server = await web(world, count)
        try:
            by_processes[str(count)] = await sales(args, world, server, customers, results,
                                                   count)
        finally:
            server.stop()


async def web(world: World, count: int) -> Server:
    """The Procfile's web process, `serve --no-actors`, of `count` server processes."""
    say(f"web process: eventbook serve --no-actors --processes {count}")
    return await processes.serve(environment(**world.server_env()), world.logs,
                                 "--no-actors", processes=count)


async def sales(args: argparse.Namespace, world: World, server: Server, customers: Path,
                results: dict[str, Any], count: int) -> dict[str, Any]:
    """The flash sale and the spread load against `server` (of `count` processes): web
    only, and as deployed (a worker confirming the bookings meanwhile)."""
    wanted = set(args.scenarios)
    load = {"connections": args.connections, "threads": args.threads}
    of = f", {count} server process{'es' if count > 1 else ''}"
    out: dict[str, Any] = {}

    async def flash() -> dict[str, Any]:
        return await scenarios.flash_sale(world, server, customers, capacity=args.capacity,
                                          limit=300, **load)

    async def spread() -> dict[str, Any]:
        run = await scenarios.spread(world, server, customers, events=args.events,
                                     duration=args.duration, **load)
        run["events"] = args.events
        return run

    for name, key, sale, text in (
        ("flash", "flash_sale", flash, f"flash sale: 1 event, {args.capacity} tickets"),
        ("spread", "spread", spread, f"spread: {args.events} events, {args.duration:g} s"),
    ):
        if name in wanted:
            say(text + of)
            with sampled(args, server, world, results, f"{name}{of} (server)"):
                out[key] = await sale()
        # --quick runs the deployed sales with the first count only, to stay short.
        if "deployed" in wanted and (count == args.processes[0] or not args.quick):
            say(f"{text}{of}, as deployed: a worker confirming meanwhile")
            profile = (results.setdefault("profiles", {}).setdefault(
                f"{name} as deployed{of} (worker)", {}) if args.profile else None)
            out[f"{name}_deployed"] = await scenarios.deployed(
                world, f"worker-{name}-deployed-{count}", sale, profile=profile
            )
    return out


def main(argv: list[str]) -> int:
    args = parse(argv)
    ensure_wrk()
    results: dict[str, Any] = {
        "machine": report.machine(),
        "git": report.git_commit(),
        "settings": {key: str(value) for key, value in vars(args).items()},
        "web": "eventbook serve --no-actors, default settings and a metrics token",
        "ceilings": {},
        "scenarios": {},
    }
    started = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="eventbook-bench-"))
    world = World(directory)
    status = 0

    async def run() -> None:
        await world.prepare()
        try:
            await measure(args, world, results)
        finally:
            await world.close_pool()

    try:
        world.start_servers()
        asyncio.run(run())
    except scenarios.Failed as failure:
        results["failed"] = str(failure)
        say(f"FAILED: {failure}")
        status = 1
    except Exception:
        results["failed"] = traceback.format_exc()
        traceback.print_exc()
        status = 1
    finally:
        world.stop_servers()
    results["seconds"] = round(time.monotonic() - started, 1)
    for name, summary in results.get("profiles", {}).items():
        print()
        print(profile_report(name, summary))
    print()
    print(report.table(report.rows(results)))
    path = report.write(results, args.results)
    print(f"\nbench: {results['seconds']:.0f} s; figures in {path}")
    if args.keep or status:
        print(f"bench: servers' data and logs in {directory}")
    else:
        shutil.rmtree(directory, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
