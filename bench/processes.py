"""The bench's child processes, run by the tests' harness (tests.processes), and the CPU
each process uses."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import aiohttp

from eventbook.embedded import free_port
from tests.processes import ROOT, Process, Server, environment


async def serve(env: dict[str, str], logs: Path, *extra: str, processes: int = 1) -> Server:
    """`eventbook serve EXTRA` on a free port, once /readyz answers; with `processes`
    above 1, `serve --processes N`, once each of its server processes runs."""
    name = "serve.log" if processes == 1 else f"serve-{processes}-processes.log"
    args = extra if processes == 1 else (*extra, "--processes", str(processes))
    server = Server(env, logs / name, *args, cwd=ROOT)
    await server.wait_ready()
    if processes > 1:
        await all_answer(server, processes)
    return server


async def all_answer(server: Server, processes: int, timeout: float = 60) -> None:
    """Until health checks, each on a connection of its own, have reached every server
    process (their log lines name the process)."""
    deadline = time.monotonic() + timeout
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        while True:
            for _ in range(4 * processes):
                async with session.get(f"{server.url}/healthz") as answer:
                    answer.raise_for_status()
            answered = {json.loads(line).get("process") for line in server.output.splitlines()
                        if line.startswith("{") and '"route": "/healthz"' in line}
            if answered >= set(range(processes)):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"only processes {answered} of {processes} answer")
            await asyncio.sleep(0.1)


def family(pid: int) -> list[int]:
    """`pid` and every live process descended from it: a server and its server processes."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[1])
    found = [pid]
    for candidate in found:
        found.extend(child for child, parent in parents.items() if parent == candidate)
    return found


async def bare(mode: str, logs: Path, database_url: str | None = None) -> Process:
    """A bare aiohttp server of bench.bare (a ceiling), once /healthz answers."""
    port = free_port()
    args = [mode, str(port)] + ([database_url] if database_url else [])
    child = Process(args, environment(), logs / f"bare-{mode}.log", ROOT, module="bench.bare",
                    port=port)
    await child.wait_ready("/healthz")
    return child


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU time each live process of `pids` has used so far."""
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    return used


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two readings; a process born in between counts whole."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def postgres_pids() -> list[int]:
    """Every PostgreSQL process on the machine (the bench's server is the only one
    under load while it runs)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids
