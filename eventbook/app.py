"""The app factory: wires configuration, resources, middlewares and routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import asyncpg
import redis.asyncio
import redis.exceptions
import structlog
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from eventbook import (
    accounts,
    announcements,
    bookings,
    db,
    events,
    health,
    notifications,
    openapi,
)
from eventbook.actors import Supervisor, build_actors, watch_streams
from eventbook.auth import PASSWORDS, TOKENS, Passwords, Tokens, authenticate
from eventbook.booking_batcher import batcher_ctx
from eventbook.config import Config
from eventbook.errors import problems
from eventbook.keys import CONFIG, METRICS, POOL, REDIS, SEARCH_POOL
from eventbook.metrics import Metrics
from eventbook.middlewares import drop_server_header, request_id
from eventbook.ratelimit import RATE_LIMITER, RateLimiter

log = structlog.get_logger(__name__)

SUPERVISOR = web.AppKey("supervisor", Supervisor)


def redis_client(config: Config) -> redis.asyncio.Redis:
    assert config.redis_url is not None
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        config.redis_url,
        max_connections=config.redis_pool_max,
        timeout=5,
        socket_timeout=5,
        socket_connect_timeout=2,
        decode_responses=True,
        # After Redis restarts, every pooled connection is dead and would fail its next
        # command once: retry that once, at once, on a fresh connection. Only connection
        # errors: a timeout is not retried (a command may have run; a blackholed server
        # would double every wait).
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
    )
    return redis.asyncio.Redis(connection_pool=pool)


async def passwords_ctx(app: web.Application) -> AsyncIterator[None]:
    app[PASSWORDS] = Passwords(app[CONFIG])
    yield
    app[PASSWORDS].close()


async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    app[POOL] = await db.create_config_pool(config, config.db_pool_min, config.db_pool_max)
    yield
    await app[POOL].close()


async def search_pool_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    assert config.database_url is not None
    app[SEARCH_POOL] = await db.create_search_pool(
        config.database_url, config.search_concurrency, config.search_timeout_ms
    )
    yield
    await app[SEARCH_POOL].close()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    app[REDIS] = redis_client(app[CONFIG])
    app[RATE_LIMITER] = RateLimiter(app[REDIS], app[CONFIG].redis_prefix)
    yield
    await app[REDIS].aclose()


async def metrics_refresh_ctx(app: web.Application) -> AsyncIterator[None]:
    """Read the outbox and stream gauges in the background, so a scrape queries nothing."""
    task = asyncio.create_task(
        app[METRICS].refresh_forever(
            app[POOL], app[REDIS], app[CONFIG].metrics_refresh_seconds
        ),
        name="metrics-refresh",
    )
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def private_metrics_ctx(
    host: str, port: int
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Serve /metrics, /healthz and /readyz of this app, without a token, on a port of
    their own (`serve --metrics-port`), for a Prometheus the public never reaches."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        probe = web.AppRunner(
            create_probe_app(app[CONFIG], app[METRICS], app[POOL], app[REDIS]),
            access_log=None,
        )
        await probe.setup()
        try:
            await web.TCPSite(probe, host, port).start()
            log.info("metrics_listening", host=host, port=port)
            yield
        finally:
            await probe.cleanup()

    return ctx


async def actors_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    metrics = app[METRICS]
    supervisor = Supervisor(
        build_actors(config, app[POOL], app[REDIS], config.actors, metrics), metrics=metrics
    )
    app[SUPERVISOR] = supervisor
    supervisor.start()
    yield
    await supervisor.stop()


def create_app(
    config: Config, *, actors: bool = True, private_metrics: tuple[str, int] | None = None
) -> web.Application:
    """A fresh application; `actors=False` serves HTTP only (`serve --no-actors`).
    /metrics is on its port only with a metrics token; `private_metrics` (host, port)
    serves it without one on another port."""
    assert config.jwt_secret is not None
    app = web.Application(
        middlewares=[request_id, problems, authenticate],
        client_max_size=config.max_body_bytes,
        # Left on, aiohttp inflates a gzip/deflate/br/zstd body in its HTTP parser with no
        # cap on the inflated total: client_max_size stops only what a handler reads, and
        # after the answer aiohttp inflates the rest of the body to discard it, so 1 MiB
        # of gzip bomb holds the event loop about a second. Bodies stay as sent and
        # read_json refuses encoded ones. Set on the app, not in run_app, so that every
        # runner of it (the tests' too) gets it.
        handler_args={"auto_decompress": False},
    )
    app.on_response_prepare.append(drop_server_header)
    app[CONFIG] = config
    app[METRICS] = Metrics()
    watch_streams(app[METRICS], config.redis_prefix)
    app[TOKENS] = Tokens(
        config.jwt_secret, config.jwt_issuer, config.jwt_audience, config.jwt_ttl_seconds
    )
    app.cleanup_ctx.extend(
        [passwords_ctx, pool_ctx, search_pool_ctx, batcher_ctx, redis_ctx,
         openapi.document_ctx]
    )
    if config.metrics_token is not None or private_metrics is not None:
        app.cleanup_ctx.append(metrics_refresh_ctx)
    if private_metrics is not None:
        app.cleanup_ctx.append(private_metrics_ctx(*private_metrics))
    if actors:
        app.cleanup_ctx.append(actors_ctx)
    for module in (health, accounts, events, announcements, bookings, notifications, openapi):
        app.add_routes(module.routes)
    if config.metrics_token is not None:
        app.add_routes(health.metrics_routes)
    return app


def create_probe_app(
    config: Config, metrics: Metrics, pool: asyncpg.Pool, client: redis.asyncio.Redis,
    *, refresh: bool = False,
) -> web.Application:
    """A private port's small HTTP face: /metrics (no token), /healthz and /readyz on
    resources its process owns. `refresh`: this app keeps the gauges fresh (the worker's;
    under serve the API app does)."""
    app = web.Application(middlewares=[request_id, problems])
    app.on_response_prepare.append(drop_server_header)
    app[CONFIG] = config
    app[METRICS] = metrics
    app[POOL] = pool
    app[REDIS] = client
    if refresh:
        app.cleanup_ctx.append(metrics_refresh_ctx)
    app.add_routes(health.routes)
    app.add_routes(health.private_metrics_routes)
    return app
