"""Real child processes for the tests and the bench (`python -m eventbook ...`, or another
module): start, wait until ready, signal, measure, always reap."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from eventbook.config import Config
from eventbook.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent


def environment(config: Config | None = None, /, **extra: str) -> dict[str, str]:
    """The environment of a child process running with `config`'s servers and settings
    (with none, the default configuration), plus `extra`: nothing of this process's own
    eventbook settings or servers leaks into it."""
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("EVENTBOOK_", "TEST_"))
        and key not in ("DATABASE_URL", "DATABASE_DIRECT_URL", "REDIS_URL", "JWT_SECRET", "PORT")
    }
    env["EVENTBOOK_LOG_FORMAT"] = "json"
    if config is not None:
        env.update(
            {
                "DATABASE_URL": config.database_url or "",
                "DATABASE_DIRECT_URL": config.database_direct_url or "",
                "EVENTBOOK_DB_POOLER": config.db_pooler,
                "REDIS_URL": config.redis_url or "",
                "JWT_SECRET": config.jwt_secret or "",
                "EVENTBOOK_REDIS_PREFIX": config.redis_prefix,
                "EVENTBOOK_ARGON2_TIME_COST": str(config.argon2_time_cost),
                "EVENTBOOK_ARGON2_MEMORY_KIB": str(config.argon2_memory_kib),
                "EVENTBOOK_BOOKING_RATE": str(config.booking_rate),
                "EVENTBOOK_SIGNUP_IP_LIMIT": str(config.signup_ip_limit),
                "EVENTBOOK_HASH_QUEUE": str(config.hash_queue),
                "EVENTBOOK_BROWSE_RATE": str(config.browse_rate),
                "EVENTBOOK_CLAIM_IDLE_MS": str(config.claim_idle_ms),
                "EVENTBOOK_MAX_ATTEMPTS": str(config.max_attempts),
                "EVENTBOOK_DB_POOL_MIN": "1",
            }
        )
    env.update(extra)
    return env


class Process:
    """One `python -m MODULE ARGS` child, eventbook unless told; its output goes to a log
    file for post-mortems. `port`, when it serves HTTP there."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path,
                 cwd: Path | None = None, *, module: str = "eventbook",
                 port: int | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self.port = port
        self._log = open(log_path, "ab")  # closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 60) -> None:
        """Block until `text` shows in the log; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in {timeout}s:\n{self.output}")
            time.sleep(0.05)

    def send(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal and reap; SIGKILL whatever is left after `timeout`."""
        try:
            self.send(sig)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait(10)
        finally:
            self._log.close()

    async def wait_ready(self, path: str = "/readyz", timeout: float = 60) -> None:
        """Until GET `path` answers 200; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"exited {self.proc.returncode}:\n{self.output}")
                try:
                    async with session.get(f"{self.url}{path}") as answer:
                        if answer.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"not ready in {timeout}s:\n{self.output}")

    def peak_rss_mb(self) -> float | None:
        """The process's peak resident set (VmHWM), while it runs."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None


class Server(Process):
    """`eventbook serve` on a free port."""

    def __init__(self, env: dict[str, str], log_path: Path, *extra: str,
                 cwd: Path | None = None) -> None:
        port = free_port()
        super().__init__(["serve", "--port", str(port), *extra], env, log_path, cwd, port=port)


def run(args: list[str], env: dict[str, str], input: str | None = None,
        timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventbook", *args], env=env, input=input, text=True,
        capture_output=True, timeout=timeout, **kwargs,
    )
