"""Fixed-window rate limits kept in Redis, shared by every web process."""

from __future__ import annotations

import asyncio
import hashlib

import redis.exceptions
import structlog

from eventbook.coalescer import Coalescer
from eventbook.connections import RedisClient, is_cluster
from eventbook.errors import Problem

log = structlog.get_logger(__name__)


def _digest(value: str) -> str:
    # Keys never hold e-mail addresses or client addresses in the clear.
    return hashlib.sha256(value.encode()).hexdigest()[:32]


# One command: count the attempt, start the window on the first one (or on a key that
# somehow lost its expiry), and say how long the window has left. Atomic, as a script.
_HIT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('TTL', KEYS[1])
if count == 1 or ttl < 0 then
    redis.call('EXPIRE', KEYS[1], ARGV[1])
    ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


# Bounds one pipeline; under load the hits waiting behind one pipeline go in the next.
MAX_PIPELINE = 256

Pending = tuple[str, int, "asyncio.Future[list[int]]"]


def _future_of(pending: Pending) -> asyncio.Future[list[int]]:
    return pending[2]


class RateLimiter:
    """Counts attempts in Redis. Hits that arrive while a round trip is in flight go
    together in the next one, as one pipeline of script calls: a Redis round trip
    through redis-py costs ~200 us of CPU, a hit in a pipeline of 16 ~40 us, and every
    booking makes one."""

    def __init__(self, client: RedisClient, prefix: str) -> None:
        self.redis = client
        self.prefix = prefix
        self._sha: str | None = None
        self._hits = Coalescer(self._send, _future_of, MAX_PIPELINE)

    def key(self, scope: str, subject: str) -> str:
        """One key per scope and subject, hashed: in braces, its Redis Cluster hash tag,
        so the counters spread over the slots and each script's key is in its own."""
        return f"{self.prefix}ratelimit:{{{scope}:{_digest(subject)}}}"

    async def hit(self, scope: str, subject: str, limit: int, window_seconds: int) -> int | None:
        """Count one attempt; return seconds to wait when over the limit, else None.

        When Redis is down the limit is not enforced (logged): refusing every login
        because the limiter's store is away would turn an outage into a lockout.
        """
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._hits.submit((self.key(scope, subject), window_seconds, future))
        try:
            count, ttl = await future
        except redis.exceptions.RedisError as exc:  # down, or refusing writes (READONLY, OOM)
            log.warning("rate_limit_unavailable", scope=scope, error=repr(exc))
            return None
        if int(count) > limit:
            return max(int(ttl), 1)
        return None

    async def _send(self, batch: list[Pending]) -> None:
        """Answer each hit of `batch` with its [count, ttl], or the error that kept it
        from being counted."""
        try:
            results = await self._count(batch)
        except Exception as exc:
            results = [exc] * len(batch)
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _count(self, batch: list[Pending]) -> list[list[int] | BaseException]:
        """[count, ttl] (or the error) for each hit of `batch`, in one round trip (on a
        cluster, one per node, at once)."""
        if is_cluster(self.redis):
            # A cluster pipeline refuses EVALSHA (some node may lack the script): the
            # script's text goes with each hit, and Redis reuses its compiled copy.
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, window, _ in batch:
                    pipe.eval(_HIT, 1, key, window)
                cluster_results: list[list[int] | BaseException] = await pipe.execute(
                    raise_on_error=False
                )
            return cluster_results
        if self._sha is None:
            self._sha = await self.redis.script_load(_HIT)
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, window, _ in batch:
                pipe.evalsha(self._sha, 1, key, window)
            results: list[list[int] | BaseException] = await pipe.execute(raise_on_error=False)
        missing = [
            n for n, r in enumerate(results) if isinstance(r, redis.exceptions.NoScriptError)
        ]
        if missing:
            # Redis lost its scripts (a restart): load it again, count only those hits.
            self._sha = None
            again = await self._count([batch[n] for n in missing])
            for n, result in zip(missing, again, strict=True):
                results[n] = result
        return results

    async def reset(self, scope: str, subject: str) -> None:
        try:
            await self.redis.delete(self.key(scope, subject))
        except redis.exceptions.RedisError:
            pass

    async def enforce(
        self, scope: str, subject: str, limit: int, window_seconds: int, detail: str
    ) -> None:
        retry_after = await self.hit(scope, subject, limit, window_seconds)
        if retry_after is not None:
            raise Problem(
                429, "too_many_requests", detail, headers={"Retry-After": str(retry_after)}
            )

