"""Child processes of the bench: started, waited for, measured (RSS), always reaped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from eventbook.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent


def clean_environment(**extra: str) -> dict[str, str]:
    """This environment without eventbook's settings, plus `extra`: a child runs with the
    default configuration except what the bench sets."""
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith("EVENTBOOK_")
        and key not in ("DATABASE_URL", "REDIS_URL", "JWT_SECRET", "PORT")
    }
    env.update(extra)
    return env


class Child:
    """One Python child process (`python -m MODULE ARGS`); output goes to a log file."""

    def __init__(self, name: str, module_args: list[str], env: dict[str, str], logs: Path,
                 port: int | None = None) -> None:
        self.name = name
        self.port = port
        self.log_path = logs / f"{name}.log"
        self._log = open(self.log_path, "ab")  # closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *module_args], env=env, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, path: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self._exited()
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready in {timeout}s; see {self.log_path}")

    def wait_for_output(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log_path.read_text(errors="replace"):
            if self.proc.poll() is not None:
                raise self._exited()
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {text!r} from {self.name} in {timeout}s")
            time.sleep(0.1)

    def _exited(self) -> RuntimeError:
        return RuntimeError(f"{self.name} exited {self.proc.returncode}; see {self.log_path}")

    def peak_rss_mb(self) -> float | None:
        """The process's peak resident set (VmHWM), while it runs."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def stop(self, timeout: float = 30) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        finally:
            self._log.close()


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


def eventbook(name: str, args: list[str], env: dict[str, str], logs: Path) -> Child:
    """`eventbook serve ...` on a free port (ready when /readyz answers), or any
    other subcommand."""
    if args[0] != "serve":
        return Child(name, ["eventbook", *args], env, logs)
    port = free_port()
    child = Child(name, ["eventbook", *args, "--port", str(port)], env, logs, port)
    child.wait_ready("/readyz")
    return child


def bare(mode: str, logs: Path, database_url: str | None = None) -> Child:
    port = free_port()
    args = ["bench.bare", mode, str(port)] + ([database_url] if database_url else [])
    child = Child(f"bare-{mode}", args, clean_environment(), logs, port)
    child.wait_ready("/healthz")
    return child
