"""`serve --processes N`: N server processes on one port, started and supervised by a
parent that serves nothing itself.

Each child is `eventbook serve --process-index I`, a whole server with its own event
loop, asyncpg pool, Redis client and booking batcher, bound to the same host:port with
SO_REUSEPORT so that the kernel spreads the connections over them. The parent passes
SIGTERM / SIGINT on to every child, each drains as one `serve` does, and the parent
exits when all have: 0 when every one stopped cleanly. A child that dies meanwhile is
started again (the port stays served by the others), after a pause that doubles with
each death in a row; one that keeps dying young means a fault no restart mends, and
the parent stops them all and exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType

import structlog

log = structlog.get_logger("eventbook")

# A child that ran this long before it died was healthy: its restart waits the shortest
# pause again. One that died sooner died young.
HEALTHY_AFTER_SECONDS = 10.0
# A slot whose child died young this many times in a row gives up the whole serve: a
# port taken, a bad setting, a server gone for good; restarts would only spin.
MAX_YOUNG_DEATHS = 5
RESTART_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
# What the parent gives a child past its own --shutdown-timeout before SIGKILL.
STOP_GRACE_SECONDS = 10.0
POLL_SECONDS = 0.1


@dataclasses.dataclass
class Child:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    young_deaths: int = 0
    restart_at: float | None = None


class Parent:
    """Start `count` children from `command(index)`, keep them running, stop them."""

    def __init__(self, count: int, command: Callable[[int], list[str]],
                 env: dict[str, str], shutdown_timeout: float) -> None:
        self.command = command
        self.env = env
        self.shutdown_timeout = shutdown_timeout
        self.children = [Child(index) for index in range(count)]
        self.stopping = False
        self.failed = False

    def run(self) -> int:
        """Until a signal (or a child that keeps dying) stops everything: the exit status."""
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM,
                                                                    signal.SIGINT)}
        try:
            for child in self.children:
                self._start(child)
            while not self.stopping:
                self._watch()
                time.sleep(POLL_SECONDS)
            return self._stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            log.info("processes_stopping", signal=signal.Signals(signum).name)
        self.stopping = True

    def _start(self, child: Child) -> None:
        # A process group of its own: a terminal's Ctrl-C reaches the parent only, which
        # passes it on once, as SIGTERM, so every child drains the same way.
        child.proc = subprocess.Popen(
            [sys.executable, "-m", "eventbook", *self.command(child.index)],
            env=self.env, process_group=0,
        )
        child.started = time.monotonic()
        child.restart_at = None
        log.info("process_started", index=child.index, pid=child.proc.pid)

    def _watch(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.proc is None:
                if child.restart_at is not None and now >= child.restart_at:
                    self._start(child)
                continue
            status = child.proc.poll()
            if status is None:
                continue
            lived = now - child.started
            child.young_deaths = child.young_deaths + 1 if lived < HEALTHY_AFTER_SECONDS else 0
            log.error("process_died", index=child.index, pid=child.proc.pid, status=status,
                      lived_s=round(lived, 1), young_deaths=child.young_deaths)
            child.proc = None
            if child.young_deaths >= MAX_YOUNG_DEATHS:
                log.error("processes_giving_up", index=child.index,
                          young_deaths=child.young_deaths)
                self.failed = self.stopping = True
                return
            delay = RESTART_DELAYS[min(child.young_deaths, len(RESTART_DELAYS) - 1)]
            child.restart_at = now + delay

    def _stop_all(self) -> int:
        """SIGTERM to every child, wait for each to drain, SIGKILL one that outstays its
        shutdown timeout: 0 when every child exited 0 and none had to be given up on."""
        running = [child for child in self.children if child.proc is not None]
        for child in running:
            assert child.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_timeout + STOP_GRACE_SECONDS
        status = 1 if self.failed else 0
        for child in running:
            assert child.proc is not None
            try:
                code = child.proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.error("process_killed", index=child.index, pid=child.proc.pid)
                child.proc.kill()
                code = child.proc.wait()
            if code != 0:
                log.error("process_failed", index=child.index, pid=child.proc.pid, status=code)
                status = 1
        return status


async def watch_parent(parent: int, interval: float = 1.0) -> None:
    """In a child: once the parent is gone (killed past its own handlers), SIGTERM this
    process, which drains and exits rather than serve on unsupervised."""
    while True:
        await asyncio.sleep(interval)
        if os.getppid() != parent:
            break
    log.error("parent_gone", parent=parent)
    os.kill(os.getpid(), signal.SIGTERM)
