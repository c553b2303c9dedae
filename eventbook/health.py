"""Liveness, readiness and metrics for operators and load balancers.

`routes` (health) are served everywhere. /metrics comes in two declarations: on the API
port only to the holder of EVENTBOOK_METRICS_TOKEN (`metrics_routes`), and without a
token on a private port (`private_metrics_routes`, `--metrics-port`). Either serves the
last snapshot the background refresh took (eventbook.metrics), with no query of its own.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from eventbook.endpoints import PUBLIC, SCRAPER, endpoint, json_response
from eventbook.errors import Problem
from eventbook.keys import CONFIG, METRICS, POOL, REDIS
from eventbook.metrics import CONTENT_TYPE_LATEST
from eventbook.outages import check, postgres_writable, redis_writable

routes = web.RouteTableDef()
metrics_routes = web.RouteTableDef()
private_metrics_routes = web.RouteTableDef()
CHECK_TIMEOUT = 2.0
METRICS_DESCRIPTION = (
    "The text exposition format: requests by route and status, bookings by outcome, "
    "outbox backlog, stream length, pending, lag and dead letters, actor restarts, mails. "
    "The outbox and stream gauges are as read by the last background refresh "
    "(every EVENTBOOK_METRICS_REFRESH_SECONDS)."
)


@routes.get("/healthz")
@endpoint("The process is alive", roles=PUBLIC, tag="operations")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
@endpoint(
    "PostgreSQL and Redis answer and take writes",
    roles=PUBLIC,
    problems={503: ["not_ready"]},
    tag="operations",
)
async def readyz(request: web.Request) -> web.Response:
    postgres, redis_state = await asyncio.gather(
        check(postgres_writable(request.app[POOL]), CHECK_TIMEOUT),
        check(redis_writable(request.app[REDIS], request.app[CONFIG].redis_prefix),
              CHECK_TIMEOUT),
    )
    checks = {"postgres": postgres, "redis": redis_state}
    if set(checks.values()) != {"ok"}:
        wrong = ", ".join(
            f"{name} {'refuses writes' if state == 'read_only' else 'unavailable'}"
            for name, state in checks.items() if state != "ok"
        )
        raise Problem(503, "not_ready", f"Not ready: {wrong}.", checks=checks)
    return json_response({"status": "ready", "checks": checks})


@metrics_routes.get("/metrics")
@endpoint(
    "Prometheus metrics",
    roles=SCRAPER,
    tag="operations",
    media_type="text/plain",
    description=METRICS_DESCRIPTION + " Served on this port only when the server has a "
    "metrics token; `serve --metrics-port` serves it without one on a private port.",
)
async def metrics(request: web.Request) -> web.Response:
    return _exposition(request)


@private_metrics_routes.get("/metrics")
@endpoint(
    "Prometheus metrics", roles=PUBLIC, tag="operations", media_type="text/plain",
    description=METRICS_DESCRIPTION,
)
async def private_metrics(request: web.Request) -> web.Response:
    return _exposition(request)


def _exposition(request: web.Request) -> web.Response:
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
