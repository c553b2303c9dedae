"""On a Redis Cluster, each topic's keys share one slot, the topics spread over the
masters, and a REDIS_URL naming a cluster node gets the cluster client."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from eventbook import topics
from eventbook.actors.stream import (
    dead_letter_key,
    failures_key,
    heartbeat_key,
    rename_legacy_keys,
    stream_key,
)
from eventbook.config import Config
from eventbook.connections import open_redis
from eventbook.ratelimit import RateLimiter


async def test_each_topics_keys_share_one_slot_and_the_topics_spread(config: Config) -> None:
    prefix = config.redis_prefix
    async with open_redis(config) as client:
        assert isinstance(client, RedisCluster)
        slots = {}
        for topic in topics.TOPICS:
            keys = [stream_key(prefix, topic), dead_letter_key(prefix, topic),
                    failures_key(prefix, topic), heartbeat_key(prefix, topic, "host-1-abc")]
            [slots[topic]] = {await client.cluster_keyslot(key) for key in keys}
        owners = {client.get_node_from_key(stream_key(prefix, topic)).name
                  for topic in topics.TOPICS}
        assert len(set(slots.values())) == len(topics.TOPICS)
        assert len(owners) >= 2

        limiter = RateLimiter(client, prefix)
        ratelimit_slots = {await client.cluster_keyslot(limiter.key("login", f"user{n}"))
                           for n in range(30)}
        assert len(ratelimit_slots) > 20


async def test_a_cluster_node_url_is_detected_and_renaming_is_skipped(config: Config) -> None:
    async with open_redis(config.replace(redis_cluster=None)) as client:
        assert isinstance(client, RedisCluster)
        await client.xadd(f"{config.redis_prefix}stream:confirmations", {"kind": "x"})
        await rename_legacy_keys(client, config.redis_prefix, topics.CONFIRMATIONS)
        assert not await client.exists(stream_key(config.redis_prefix, topics.CONFIRMATIONS))


async def test_the_cluster_client_refuses_transactions_that_would_stop_the_event_loop(
    config: Config,
) -> None:
    async with open_redis(config) as client:
        with pytest.raises(RedisClusterException, match="use a script"):
            client.pipeline(transaction=True)


async def test_a_fresh_client_answers_a_burst_of_first_commands_on_every_node(
    config: Config,
) -> None:
    """A process's actors, rate limiter and metrics all reach Redis within its first
    moment: none of those first commands may fail while the client learns the slots."""
    for attempt in range(5):
        keys = [f"{config.redis_prefix}{{burst-{attempt}-{n}}}:stream" for n in range(60)]
        async with open_redis(config) as client:
            answers = await asyncio.gather(
                *(client.xadd(key, {"n": "1"}) for key in keys), return_exceptions=True
            )
            assert [a for a in answers if isinstance(a, BaseException)] == []
            assert [await client.xlen(key) for key in keys] == [1] * len(keys)
