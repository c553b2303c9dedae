"""The tests under tests/pgbouncer run the app, its actors and migrate through a real
pgbouncer in transaction mode (EVENTBOOK_DB_POOLER=transaction), started once per session
in front of the session's PostgreSQL, with a few server connections per database so
that concurrent work really shares them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from eventbook.config import Config
from tests.conftest import Servers, base_config
from tests.pgbouncer.bouncer import Pgbouncer

# Server connections per database: fewer than the app's pool, so transactions of
# different clients take turns on the same ones.
POOL_SIZE = 4


@pytest.fixture(scope="session")
def pgbouncer(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pgbouncer]:
    bouncer = Pgbouncer(servers.database_url, tmp_path_factory.mktemp("pgbouncer"), POOL_SIZE)
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture
def config(database: str, servers: Servers, pgbouncer: Pgbouncer) -> Config:
    """The test's database through pgbouncer, and directly for what is session-bound."""
    return base_config(
        pgbouncer.url(database), servers.redis_url,
        database_direct_url=database, db_pooler="transaction",
    )

