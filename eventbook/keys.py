"""Typed keys for the state the app factory shares with handlers.

Keys for a class defined in a module of ours sit next to that class (auth.TOKENS,
ratelimit.RATE_LIMITER) to keep imports one-way.
"""

from __future__ import annotations

import asyncpg
import redis.asyncio
from aiohttp import web

from eventbook.config import Config

CONFIG = web.AppKey("config", Config)
POOL = web.AppKey("pool", asyncpg.Pool)
REDIS = web.AppKey("redis", redis.asyncio.Redis)

REQUEST_ID = web.RequestKey("request_id", str)
