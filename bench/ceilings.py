"""The ceilings every figure is divided by, measured in the same run on the same machine."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from bench import processes
from bench.runs import BODY, booking_run, latency_ms, percentile
from bench.world import World
from bench.wrk import run_wrk
from eventbook.embedded import postgres_bin_dir

# Large enough that no fixed-duration run sells out.
UNBOUNDED = 1_000_000


async def http_ceiling(world: World, customers: Path, *, connections: int, duration: float,
                       threads: int) -> dict[str, Any]:
    """A bare aiohttp handler answering the booking request with a fixed JSON body."""
    server = await processes.bare("json", world.logs)
    try:
        paths = world.paths_file("http", [uuid.uuid4()])
        result = await run_wrk(server.url, paths, connections=connections, duration=duration,
                               threads=threads, tokens_file=customers, body=BODY)
    finally:
        server.stop()
    answered = result["statuses"].get("201", 0)
    return {"requests_per_s": answered / (result["duration_us"] / 1e6), **latency_ms(result)}


async def naive_ceiling(world: World, customers: Path, *, connections: int, duration: float,
                        threads: int) -> dict[str, Any]:
    """A bare aiohttp handler booking one ticket per request (bench/naive.sql: one booking
    per call and per commit), on one hot event."""
    [event] = await world.insert_events(1, UNBOUNDED)
    server = await processes.bare("book", world.logs, world.database_url)
    try:
        return await booking_run(world, server.url, "naive", [event], customers,
                                 connections=connections, duration=duration, threads=threads,
                                 server_pid=server.proc.pid)
    finally:
        server.stop()


def pgbench_binary() -> str:
    bundled = postgres_bin_dir() / "pgbench"
    if bundled.exists():
        return str(bundled)
    found = shutil.which("pgbench")
    if found is None:
        raise SystemExit("bench: no pgbench next to the embedded PostgreSQL nor on PATH")
    return found


async def pgbench_ceiling(world: World, *, connections: int, duration: float) -> dict[str, Any]:
    """pgbench booking one ticket per call (bench/naive.sql) on one hot event: the row-lock
    ceiling with no HTTP and no Python at all."""
    [event] = await world.insert_events(1, UNBOUNDED)
    customers = await world.db.fetchval("SELECT count(*) FROM bench_customers")
    script = world.directory / "pgbench.sql"
    script.write_text(
        f"\\set n random(1, {customers})\n"
        f"SELECT outcome FROM bench_book_one('{event}'::uuid,"
        " (SELECT id FROM bench_customers WHERE n = :n));\n"
    )
    logs = world.directory / "pgbench-log"
    logs.mkdir(exist_ok=True)
    url = world.database_url
    host, port = re.search(r"@([^:/]+):(\d+)/", url).groups()  # type: ignore[union-attr]
    proc = await asyncio.create_subprocess_exec(
        pgbench_binary(), "-n", "-M", "prepared", "-c", str(connections), "-j", "2",
        "-T", f"{duration:.0f}", "-f", str(script), "-l", "--log-prefix", str(logs / "tx"),
        "-h", host, "-p", port, "-U", "postgres", url.rsplit("/", 1)[1],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=world.directory,
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"pgbench failed:\n{text}")
    tps = re.search(r"tps = ([\d.]+)", text)
    latencies: list[float] = []
    for log in logs.glob("tx*"):
        for line in log.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3:
                latencies.append(int(fields[2]) / 1000)
    sold = await world.sold([event])
    return {
        "bookings_per_s": sold["bookings"] / sold["span"] if sold["span"] else 0.0,
        "pgbench_tps": float(tps.group(1)) if tps else None,
        "bookings": sold["bookings"],
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
    }


async def fanout_floor(world: World, event: uuid.UUID) -> dict[str, Any]:
    """One INSERT ... SELECT writing an event_updated notification for every attendee of
    `event`: what recording the fan-out costs PostgreSQL with no actor in the way."""
    async with world.db.acquire() as conn:
        started = time.perf_counter()
        rows = await conn.execute(
            """
            INSERT INTO notifications (user_id, kind, event_id, event_version, recipient,
                                       subject, body)
            SELECT b.user_id, 'event_updated', b.event_id, 0, u.email,
                   'Event changed: ' || e.title,
                   'Hello ' || u.name || ', the event ' || e.title || ' has changed.'
              FROM bookings b
              JOIN users u ON u.id = b.user_id
              JOIN events e ON e.id = b.event_id
             WHERE b.event_id = $1 AND b.status = 'confirmed'
            """,
            event,
        )
        seconds = time.perf_counter() - started
        await conn.execute(
            "DELETE FROM notifications WHERE event_id = $1 AND event_version = 0", event
        )
    count = int(rows.split()[-1])
    return {"rows": count, "seconds": seconds, "rows_per_s": count / seconds}
