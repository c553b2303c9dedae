"""Fixed-window rate limits kept in Redis, shared by every web process."""

from __future__ import annotations

import hashlib

import redis.asyncio
import redis.exceptions
import structlog
from aiohttp import web

from eventbook.errors import Problem

log = structlog.get_logger(__name__)


def _digest(value: str) -> str:
    # Keys never hold e-mail addresses or client addresses in the clear.
    return hashlib.sha256(value.encode()).hexdigest()[:32]


# One round trip and one command: count the attempt, start the window on the first one
# (or on a key that somehow lost its expiry), and say how long the window has left.
# A MULTI pipeline of SET NX / INCR / TTL did the same in five commands; on the booking
# path their packing and parsing were a sixth of the server's CPU (issue 7's profile).
_HIT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('TTL', KEYS[1])
if count == 1 or ttl < 0 then
    redis.call('EXPIRE', KEYS[1], ARGV[1])
    ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


class RateLimiter:
    def __init__(self, client: redis.asyncio.Redis, prefix: str) -> None:
        self.redis = client
        self.prefix = prefix
        self._hit = client.register_script(_HIT)

    def key(self, scope: str, subject: str) -> str:
        return f"{self.prefix}ratelimit:{scope}:{_digest(subject)}"

    async def hit(self, scope: str, subject: str, limit: int, window_seconds: int) -> int | None:
        """Count one attempt; return seconds to wait when over the limit, else None.

        When Redis is down the limit is not enforced (logged): refusing every login
        because the limiter's store is away would turn an outage into a lockout.
        """
        key = self.key(scope, subject)
        try:
            count, ttl = await self._hit(keys=[key], args=[window_seconds])
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            log.warning("rate_limit_unavailable", scope=scope, error=repr(exc))
            return None
        if int(count) > limit:
            return max(int(ttl), 1)
        return None

    async def reset(self, scope: str, subject: str) -> None:
        try:
            await self.redis.delete(self.key(scope, subject))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            pass

    async def enforce(
        self, scope: str, subject: str, limit: int, window_seconds: int, detail: str
    ) -> None:
        retry_after = await self.hit(scope, subject, limit, window_seconds)
        if retry_after is not None:
            raise Problem(
                429, "too_many_requests", detail, headers={"Retry-After": str(retry_after)}
            )


RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
