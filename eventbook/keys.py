"""Every typed key for the state the app factory shares with handlers and middlewares.

The classes of our own modules are imported for type checking only, so this module
imports none of them at run time and every module can import it: eventbook.metrics is
shared with the actors, which never import aiohttp.web.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from eventbook.config import Config
from eventbook.connections import RedisClient
from eventbook.metrics import Metrics

if TYPE_CHECKING:
    from eventbook.actors.supervisor import Supervisor
    from eventbook.auth import Passwords, Principal, Tokens
    from eventbook.booking_batcher import BookingBatcher
    from eventbook.ratelimit import RateLimiter
    from eventbook.replica import Reads

# -- the app's ---------------------------------------------------------------------

CONFIG = web.AppKey("config", Config)
POOL = web.AppKey("pool", asyncpg.Pool)
# The event search's own connections (connections.open_search).
SEARCH_POOL = web.AppKey("search_pool", asyncpg.Pool)
# Where browsing reads go: the replica (DATABASE_READ_URL) while fresh, else the primary.
READS: web.AppKey[Reads] = web.AppKey("reads")
REDIS: web.AppKey[RedisClient] = web.AppKey("redis")
METRICS = web.AppKey("metrics", Metrics)
PASSWORDS: web.AppKey[Passwords] = web.AppKey("passwords")
TOKENS: web.AppKey[Tokens] = web.AppKey("tokens")
RATE_LIMITER: web.AppKey[RateLimiter] = web.AppKey("rate_limiter")
BOOKING_BATCHER: web.AppKey[BookingBatcher] = web.AppKey("booking_batcher")
SUPERVISOR: web.AppKey[Supervisor] = web.AppKey("supervisor")
# The OpenAPI document, serialized once at start.
OPENAPI_DOCUMENT = web.AppKey("openapi_document", bytes)

# -- a request's -------------------------------------------------------------------

REQUEST_ID = web.RequestKey("request_id", str)
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal")
