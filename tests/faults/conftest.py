"""Fixtures of the fault suite: servers a test may stop, and processes always reaped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eventbook.embedded import EmbeddedServices
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
