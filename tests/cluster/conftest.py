"""The tests under tests/cluster run against a real Redis Cluster of three masters
(tests/redis_cluster.py), started once, the first time one of them needs it. PostgreSQL
stays the session's; only the Redis side of `config` changes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from eventbook.config import Config
from tests.conftest import Servers, base_config
from tests.redis_cluster import RedisCluster


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def config(database: str, servers: Servers, redis_cluster: RedisCluster) -> Config:
    return base_config(database, redis_cluster.url, redis_cluster=True)
