"""The app factory: wires configuration, resources, middlewares and routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from eventbook import (
    accounts,
    announcements,
    bookings,
    connections,
    events,
    health,
    holds,
    notifications,
    openapi,
    replica,
    ticket_types,
    waitlist,
    webhooks,
)
from eventbook.access import drop_server_header, request_id
from eventbook.actors import supervised, watch_streams
from eventbook.auth import Passwords, Tokens, authenticate
from eventbook.booking_batcher import batcher_ctx
from eventbook.config import Config
from eventbook.errors import problems
from eventbook.keys import (
    CONFIG,
    METRICS,
    PASSWORDS,
    POOL,
    RATE_LIMITER,
    READS,
    REDIS,
    SEARCH_POOL,
    SUPERVISOR,
    TOKENS,
)
from eventbook.metrics import Metrics
from eventbook.probe import create_probe_app, metrics_refresh_ctx, serve_probe
from eventbook.ratelimit import RateLimiter


async def passwords_ctx(app: web.Application) -> AsyncIterator[None]:
    app[PASSWORDS] = Passwords(app[CONFIG])
    yield
    app[PASSWORDS].close()


async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
    async with connections.open_postgres(app[CONFIG]) as app[POOL]:
        yield


async def search_pool_ctx(app: web.Application) -> AsyncIterator[None]:
    async with connections.open_search(app[CONFIG]) as app[SEARCH_POOL]:
        yield


async def reads_ctx(app: web.Application) -> AsyncIterator[None]:
    async with replica.open_reads(
        app[CONFIG], app[POOL], app[SEARCH_POOL], app[METRICS]
    ) as app[READS]:
        yield


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    async with connections.open_redis(app[CONFIG]) as app[REDIS]:
        app[RATE_LIMITER] = RateLimiter(app[REDIS], app[CONFIG].redis_prefix)
        yield


def private_metrics_ctx(
    host: str, port: int
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Serve /metrics, /healthz and /readyz of this app, without a token, on a port of
    their own (`serve --metrics-port`), for a Prometheus the public never reaches."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        probe = create_probe_app(app[CONFIG], app[METRICS], app[POOL], app[REDIS])
        async with serve_probe(probe, host, port):
            yield

    return ctx


async def actors_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    async with supervised(
        config, app[POOL], app[REDIS], config.actors, app[METRICS]
    ) as app[SUPERVISOR]:
        yield


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
        [passwords_ctx, pool_ctx, search_pool_ctx, reads_ctx, batcher_ctx, redis_ctx,
         openapi.document_ctx]
    )
    if config.metrics_token is not None or private_metrics is not None:
        app.cleanup_ctx.append(metrics_refresh_ctx)
    if private_metrics is not None:
        app.cleanup_ctx.append(private_metrics_ctx(*private_metrics))
    if actors:
        app.cleanup_ctx.append(actors_ctx)
    for module in (
        health, accounts, events, ticket_types, announcements, bookings, holds, waitlist,
        webhooks, notifications, openapi,
    ):
        app.add_routes(module.routes)
    if config.metrics_token is not None:
        app.add_routes(health.metrics_routes)
    return app

