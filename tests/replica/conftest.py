"""A real streaming replica for the tests under this directory: a small primary of their
own (with its Redis) and a hot standby made from it with pg_basebackup, started once per
session when the first of these tests needs them. Each test's database is created on
the primary from the migrated template, as everywhere, and reaches the replica by
replication; the test starts once the replica has replayed it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from eventbook.config import Config
from eventbook.embedded import SYSTEM_USER, EmbeddedServices
from tests.client import eventually
from tests.conftest import (
    TEMPLATE,
    Servers,
    _create_template,
    _drop_database,
    base_config,
    with_database,
)

# The default maximum lag of these tests' apps: far above any real lag of an idle local
# replica, so only a paused replay makes the replica too far behind.
MAX_LAG = 10.0


class Standby(EmbeddedServices):
    """A hot standby of the PostgreSQL `primary` runs, under its own data directory: the
    same start and stop as the embedded server, its data a base backup of the primary's
    rather than a fresh initdb. `pg_basebackup -R` writes standby.signal and the
    primary_conninfo that streams the primary's WAL."""

    def __init__(self, data_dir: Path, primary: EmbeddedServices) -> None:
        super().__init__(data_dir)
        self.primary = primary

    def _init_postgres(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = self._pg_user()
        if user:
            # pg_basebackup runs as the PostgreSQL user and makes pgdata itself.
            self._make_traversable(self.data_dir)
            uid = pwd.getpwnam(SYSTEM_USER).pw_uid
            os.chown(self.data_dir, uid, user["group"])
            log_file = self.data_dir / "postgres.log"
            log_file.touch()
            os.chown(log_file, uid, user["group"])
        port = self.primary.postgres_port()
        assert port is not None
        self._pg(
            "pg_basebackup", "-D", str(self.pgdata), "-h", "127.0.0.1", "-p", str(port),
            "-U", "postgres", "-R", "-X", "stream", "--checkpoint=fast",
        )


class ReplicaPair:
    """The primary and its replica; admin URLs of both."""

    def __init__(self, root: Path) -> None:
        self.primary = EmbeddedServices(root / "primary")
        self.standby = Standby(root / "standby", self.primary)
        database_url, redis_url = self.primary.start()
        assert database_url is not None and redis_url is not None
        self.primary_url = with_database(database_url, "postgres")
        self.redis_url = redis_url
        try:
            self.replica_url = with_database(self.standby.start_postgres(), "postgres")
        except BaseException:
            self.primary.release()
            raise

    async def stop_replica(self) -> None:
        """Stop the replica (fast shutdown: its sessions are cut)."""
        await asyncio.to_thread(self.standby.stop_postgres)

    async def start_replica(self) -> None:
        await asyncio.to_thread(self.standby.start_postgres)

    def close(self) -> None:
        self.standby.stop_postgres()
        self.primary.release()

    async def caught_up(self, timeout: float = 15.0) -> None:
        """Wait until the replica has replayed everything the primary has written."""
        primary = await asyncpg.connect(self.primary_url)
        replica = await asyncpg.connect(self.replica_url)
        try:
            written = await primary.fetchval("SELECT pg_current_wal_flush_lsn()")

            async def replayed() -> bool:
                return bool(await replica.fetchval(
                    "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", written
                ))

            await eventually(replayed, timeout=timeout, interval=0.02)
        finally:
            await primary.close()
            await replica.close()

    @contextlib.asynccontextmanager
    async def replay_paused(self) -> AsyncIterator[None]:
        """The replica applies nothing more of the primary's WAL inside the block: what
        the primary commits meanwhile is missing there until the block ends."""
        replica = await asyncpg.connect(self.replica_url)
        try:
            await replica.execute("SELECT pg_wal_replay_pause()")

            async def paused() -> bool:
                state = await replica.fetchval("SELECT pg_get_wal_replay_pause_state()")
                return bool(state == "paused")

            await eventually(paused, timeout=5, interval=0.02)
            yield
        finally:
            await replica.execute("SELECT pg_wal_replay_resume()")
            await replica.close()


@pytest.fixture(scope="session")
def replica_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicaPair]:
    pair = ReplicaPair(Path(tmp_path_factory.mktemp("replica")))
    try:
        yield pair
    finally:
        pair.close()


@pytest.fixture(scope="session")
def servers(replica_pair: ReplicaPair) -> Iterator[Servers]:
    """The pair's primary and Redis, with the migrated template, for these tests."""
    asyncio.run(_create_template(replica_pair.primary_url))
    try:
        yield Servers(replica_pair.primary_url, replica_pair.redis_url, None)
    finally:
        asyncio.run(_drop_database(replica_pair.primary_url, TEMPLATE))


@pytest.fixture
async def database(database: str, replica_pair: ReplicaPair) -> str:
    """The test's database, once the replica has it too."""
    await replica_pair.caught_up()
    return database


@pytest.fixture
def config(database: str, servers: Servers, replica_pair: ReplicaPair) -> Config:
    name = urlsplit(database).path.lstrip("/")
    return base_config(
        database, servers.redis_url,
        database_read_url=with_database(replica_pair.replica_url, name),
        read_max_lag_seconds=MAX_LAG,
    )
