"""Fixtures of the fault suite: servers a test may stop, and processes always reaped."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiosmtpd.controller import Controller

from eventbook import connections, db
from eventbook.config import Config
from eventbook.embedded import EmbeddedServices, free_port
from tests.conftest import Servers, base_config
from tests.processes import Process, Server

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every fault test is `slow` (real processes and servers): `-m "not slow"` skips
    the suite while iterating on something else."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def private(tmp_path: Path) -> Iterator[EmbeddedServices]:
    """PostgreSQL and Redis of this test alone, to stop and start at will (start the ones
    you need; ports are kept across restarts, so URLs stay valid). Never stop the
    session's shared servers: other tests use them."""
    services = EmbeddedServices(tmp_path / "private")
    try:
        yield services
    finally:
        services.stop_redis()
        services.stop_postgres()


class Processes:
    """`eventbook` children of one test, each logging to its own file; all stopped at the
    end whatever happened."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Process] = []

    def _log(self, name: str) -> Path:
        return self.log_dir / f"{len(self.started):02d}-{name}.log"

    def serve(self, env: dict[str, str], *args: str, name: str = "serve") -> Server:
        server = Server(env, self._log(name), *args)
        self.started.append(server)
        return server

    def worker(self, env: dict[str, str], *args: str, name: str = "worker") -> Process:
        worker = Process(["worker", *args], env, self._log(name))
        self.started.append(worker)
        return worker

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop(timeout=15)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
async def private_world(
    private: EmbeddedServices, servers: Servers
) -> AsyncIterator[tuple[Config, asyncpg.Pool]]:
    """A migrated database and a Redis, both on servers of this test alone (to stop at
    will), the config naming them and a pool for the test's own queries."""
    # start_postgres runs an event loop of its own: not on this one.
    database_url = await asyncio.to_thread(private.start_postgres)
    redis_url = await asyncio.to_thread(private.start_redis)
    config = base_config(database_url, redis_url, claim_idle_ms=1000)
    conn = await asyncpg.connect(database_url)
    try:
        await db.migrate(conn)
    finally:
        await conn.close()
    pool = await connections.create_pool(database_url, 1, 3)
    yield config, pool
    await pool.close()


class MailServer:
    """A real SMTP server (aiosmtpd) on a fixed port, to stop and start again; it keeps
    the recipient of every mail it accepted."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"smtp://127.0.0.1:{self.port}"
        self.recipients: list[str] = []
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.recipients.extend(envelope.rcpt_tos)
        return "250 Message accepted for delivery"

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture
def mail_server() -> Iterator[MailServer]:
    server = MailServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
