"""Typed keys for the state the app factory shares with handlers.

Keys for a class defined in a module of ours sit next to that class (auth.TOKENS,
ratelimit.RATE_LIMITER) to keep imports one-way. METRICS sits here because
eventbook.metrics is shared with the actors, which never import aiohttp.web.
"""

from __future__ import annotations

import asyncpg
import redis.asyncio
from aiohttp import web

from eventbook.config import Config
from eventbook.metrics import Metrics

CONFIG = web.AppKey("config", Config)
POOL = web.AppKey("pool", asyncpg.Pool)
# The event search's own connections (db.create_search_pool).
SEARCH_POOL = web.AppKey("search_pool", asyncpg.Pool)
REDIS = web.AppKey("redis", redis.asyncio.Redis)
METRICS = web.AppKey("metrics", Metrics)

REQUEST_ID = web.RequestKey("request_id", str)
