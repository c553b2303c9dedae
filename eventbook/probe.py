"""The private port's small app: /healthz, /readyz and /metrics without a token, for a
Prometheus and a load balancer the public never reaches (`--metrics-port` of serve and
worker). It imports no API handler, so a worker that serves it loads none."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import structlog
from aiohttp import web

from eventbook import health
from eventbook.access import drop_server_header, request_id
from eventbook.config import Config
from eventbook.connections import RedisClient
from eventbook.errors import problems
from eventbook.keys import CONFIG, METRICS, POOL, REDIS
from eventbook.metrics import Metrics

log = structlog.get_logger(__name__)


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


def create_probe_app(
    config: Config, metrics: Metrics, pool: asyncpg.Pool, client: RedisClient,
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


@contextlib.asynccontextmanager
async def serve_probe(app: web.Application, host: str, port: int) -> AsyncIterator[None]:
    """Serve `app` on host:port until the block ends."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("metrics_listening", host=host, port=port)
        yield
    finally:
        await runner.cleanup()
