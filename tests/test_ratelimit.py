"""The rate limiter against real Redis: hits made together share one pipeline and are
still each counted exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from eventbook.config import Config
from eventbook.connections import redis_client
from eventbook.embedded import free_port
from eventbook.ratelimit import RateLimiter


@pytest.fixture
async def limiter(config: Config) -> AsyncIterator[RateLimiter]:
    client = redis_client(config)
    yield RateLimiter(client, config.redis_prefix)
    await client.aclose()


async def test_simultaneous_hits_on_one_subject_let_exactly_the_limit_through(
    limiter: RateLimiter,
) -> None:
    waits = await asyncio.gather(*(limiter.hit("booking", "ann", 10, 60) for _ in range(30)))
    assert waits.count(None) == 10
    assert all(wait is not None and 1 <= wait <= 60 for wait in waits if wait is not None)


async def test_subjects_hit_together_are_counted_apart(limiter: RateLimiter) -> None:
    waits = await asyncio.gather(
        *(limiter.hit("booking", f"user{n % 50}", 2, 60) for n in range(150))
    )
    # Each of the 50 subjects made 3 attempts: 2 let through, the third refused.
    assert waits.count(None) == 100
    assert await limiter.redis.ttl(limiter.key("booking", "user0")) > 0


async def test_the_window_starts_again_after_it_expires(limiter: RateLimiter) -> None:
    assert await limiter.hit("login", "bob", 1, 1) is None
    assert await limiter.hit("login", "bob", 1, 1) == 1
    await asyncio.sleep(1.1)
    assert await limiter.hit("login", "bob", 1, 1) is None


async def test_lost_scripts_are_loaded_again(limiter: RateLimiter) -> None:
    assert await limiter.hit("login", "carl", 5, 60) is None
    await limiter.redis.script_flush()
    assert await limiter.hit("login", "carl", 5, 60) is None
    assert int(await limiter.redis.get(limiter.key("login", "carl"))) == 2


async def test_without_redis_the_limit_is_not_enforced() -> None:
    client = redis.asyncio.Redis(port=free_port(), socket_connect_timeout=0.5)
    limiter = RateLimiter(client, "gone:")
    try:
        assert await limiter.hit("login", "dora", 0, 60) is None
    finally:
        await client.aclose()
