"""Starts every actor, restarts one that crashes (backoff with jitter), stops them gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Protocol

import structlog

from eventbook.metrics import Metrics
from eventbook.outages import is_outage

log = structlog.get_logger(__name__)

# The longest wait before a restart, jitter included: an actor that crashed because a
# server was down is back within this long of the server's return.
MAX_DELAY = 5.0


class Actor(Protocol):
    name: str

    async def run(self, stopping: asyncio.Event) -> None:
        """Work until `stopping` is set; finish (and acknowledge) the message in hand first."""


class Supervisor:
    def __init__(
        self, actors: list[Actor], *, base_delay: float = 0.2, max_delay: float = MAX_DELAY,
        healthy_after: float = 60.0, metrics: Metrics | None = None,
    ) -> None:
        self.actors = actors
        self.metrics = metrics or Metrics()
        self.base_delay = base_delay
        self.max_delay = max_delay
        # An actor that ran this long before crashing starts its backoff afresh, so an
        # outage last week does not make today's restart wait the longest delay.
        self.healthy_after = healthy_after
        self.stopping = asyncio.Event()
        self.restarts: dict[str, int] = {actor.name: 0 for actor in actors}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for actor in self.actors:
            self._tasks.append(asyncio.create_task(self._supervise(actor), name=actor.name))
        log.info("actors_started", actors=[actor.name for actor in self.actors])

    async def _supervise(self, actor: Actor) -> None:
        failures = 0
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                await actor.run(self.stopping)
                if self.stopping.is_set():
                    return
                log.warning("actor_returned", actor=actor.name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if time.monotonic() - started >= self.healthy_after:
                    failures = 0
                failures += 1
                # A server that is down is the whole story: no traceback, since during an
                # outage every restart fails the same way.
                if is_outage(exc):
                    log.error("actor_crashed", actor=actor.name, failures=failures,
                              error=repr(exc), cause="dependency_unavailable")
                else:
                    log.exception("actor_crashed", actor=actor.name, failures=failures,
                                  error=repr(exc))
            self.restarts[actor.name] += 1
            self.metrics.actor_restarted(actor.name)
            nominal = self.base_delay * 2 ** min(failures, 16)
            delay = min(self.max_delay, nominal * random.uniform(0.5, 1.5))
            log.info("actor_restarting", actor=actor.name, delay_s=round(delay, 3))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)

    async def stop(self, timeout: float = 30.0) -> None:
        """Ask every actor to stop; cancel those that have not finished within `timeout`."""
        self.stopping.set()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=timeout)
        for task in pending:
            log.warning("actor_stop_timeout", actor=task.get_name())
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._tasks.clear()
        log.info("actors_stopped")
