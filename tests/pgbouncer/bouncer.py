"""A real pgbouncer in transaction mode in front of a PostgreSQL server: Debian's package,
installed on demand the way bench/wrk.py installs wrk."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

from eventbook.embedded import EmbeddedError, free_port, unprivileged

# Debian installs it in /usr/sbin, which a non-root PATH may lack.
DEBIAN_BINARY = Path("/usr/sbin/pgbouncer")


def ensure_pgbouncer() -> str:
    """The path of pgbouncer; installs the Debian package first when it is missing."""
    found = shutil.which("pgbouncer") or (str(DEBIAN_BINARY) if DEBIAN_BINARY.exists() else None)
    if found:
        return found
    if shutil.which("apt-get") is None:
        raise RuntimeError("pgbouncer is not installed and there is no apt-get to install it")
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "pgbouncer"]):
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    if not DEBIAN_BINARY.exists():
        raise RuntimeError("apt-get installed pgbouncer but /usr/sbin/pgbouncer is missing")
    return str(DEBIAN_BINARY)


class Pgbouncer:
    """pgbouncer with pool_mode=transaction and `pool_size` server connections per
    database, for every database of the server at `server_url`, started in `directory`
    (its configuration, log and pid files)."""

    def __init__(self, server_url: str, directory: Path, pool_size: int = 4) -> None:
        self.server = urlsplit(server_url)
        self.directory = directory
        self.pool_size = pool_size
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, server_url: str) -> str:
        """`server_url` (a database of the server) reached through this pgbouncer."""
        parts = urlsplit(server_url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return parts._replace(netloc=netloc).geturl()

    def start(self) -> None:
        binary = ensure_pgbouncer()
        self.directory.mkdir(parents=True, exist_ok=True)
        user = self.server.username or "postgres"
        password = self.server.password or ""
        # The login pgbouncer checks is the one it uses on the server: with a password in
        # the URL both are md5, else the embedded server's trust.
        (self.directory / "users.txt").write_text(f'"{user}" "{password}"\n')
        config = self.directory / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"* = host={self.server.hostname} port={self.server.port or 5432}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            f"auth_type = {'md5' if password else 'trust'}\n"
            f"auth_file = {self.directory / 'users.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\n"
            "max_client_conn = 1000\n"
            f"logfile = {self.directory / 'pgbouncer.log'}\n"
            f"pidfile = {self.directory / 'pgbouncer.pid'}\n"
        )
        run_as = unprivileged()
        if run_as:
            # It refuses to run as root, like PostgreSQL: its files go to the same user.
            uid = int(subprocess.check_output(["id", "-u", str(run_as["user"])]))
            for path in [self.directory, *self.directory.iterdir()]:
                os.chown(path, uid, run_as["group"])
            for parent in self.directory.parents:
                if not parent.stat().st_mode & 0o001:
                    parent.chmod(parent.stat().st_mode | 0o001)
        self.process = subprocess.Popen(
            [binary, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            **run_as,
        )
        try:
            _wait_for_port(self.port, self.process)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmbeddedError(f"pgbouncer exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise EmbeddedError(f"pgbouncer did not listen on port {port}")
