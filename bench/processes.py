"""The bench's child processes, run by the tests' harness (tests.processes), and the CPU
each process uses."""

from __future__ import annotations

import os
from pathlib import Path

from eventbook.embedded import free_port
from tests.processes import ROOT, Process, Server, environment


async def serve(env: dict[str, str], logs: Path, *extra: str) -> Server:
    """`eventbook serve EXTRA` on a free port, once /readyz answers."""
    server = Server(env, logs / "serve.log", *extra, cwd=ROOT)
    await server.wait_ready()
    return server


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
