"""Liveness, readiness and metrics for operators and load balancers."""

from __future__ import annotations

import asyncio

import redis.exceptions
from aiohttp import web

from eventbook.api import PUBLIC, endpoint, json_response
from eventbook.errors import UNAVAILABLE, Problem
from eventbook.keys import METRICS, POOL, REDIS
from eventbook.metrics import CONTENT_TYPE_LATEST

routes = web.RouteTableDef()
CHECK_TIMEOUT = 2.0


@routes.get("/healthz")
@endpoint("The process is alive", roles=PUBLIC, tag="operations")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def _check(probe: asyncio.Future[object] | object) -> str:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT)  # type: ignore[arg-type]
    except (*UNAVAILABLE, redis.exceptions.RedisError):
        return "down"
    return "ok"


@routes.get("/readyz")
@endpoint(
    "PostgreSQL and Redis answer",
    roles=PUBLIC,
    problems={503: ["not_ready"]},
    tag="operations",
)
async def readyz(request: web.Request) -> web.Response:
    postgres, redis_state = await asyncio.gather(
        _check(request.app[POOL].fetchval("SELECT 1")),
        _check(request.app[REDIS].ping()),
    )
    checks = {"postgres": postgres, "redis": redis_state}
    if "down" in checks.values():
        down = ", ".join(name for name, state in checks.items() if state == "down")
        raise Problem(503, "not_ready", f"Not ready: {down} unavailable.", checks=checks)
    return json_response({"status": "ready", "checks": checks})


@routes.get("/metrics")
@endpoint(
    "Prometheus metrics",
    roles=PUBLIC,
    tag="operations",
    media_type="text/plain",
    description=(
        "The text exposition format: requests by route and status, bookings by outcome, "
        "outbox backlog, stream length, pending, lag and dead letters, actor restarts, mails."
    ),
)
async def metrics(request: web.Request) -> web.Response:
    registry = request.app[METRICS]
    await registry.refresh(request.app[POOL], request.app[REDIS])
    return web.Response(body=registry.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})
