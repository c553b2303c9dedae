"""Request id, access log and request metrics: the outermost middleware; and the hook
that keeps the Server header out of every answer."""

from __future__ import annotations

import re
import time
import uuid

import structlog
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from eventbook.keys import METRICS, REQUEST_ID
from eventbook.metrics import UNMATCHED

log = structlog.get_logger("eventbook.access")

# An incoming id is kept only when it is short and plain, so it is safe in logs.
_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def new_request_id() -> str:
    return uuid.uuid4().hex


async def drop_server_header(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: no Server header. aiohttp's default names the Python and
    aiohttp versions, which tells an attacker which known bugs to try. A hook and not
    a middleware: aiohttp adds the header when it prepares the response, after every
    middleware has returned, and just before this hook runs."""
    response.headers.popall(hdrs.SERVER, None)


@web.middleware
async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Take a sane X-Request-ID or make one, bind it to every log line, echo it back."""
    incoming = request.headers.get("X-Request-ID", "")
    rid = incoming if _SANE_ID.match(incoming) else new_request_id()
    request[REQUEST_ID] = rid
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=rid)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers["X-Request-ID"] = rid
        return response
    finally:
        elapsed = time.perf_counter() - started
        route = request.match_info.route.resource
        canonical = route.canonical if route is not None else UNMATCHED
        log.info(
            "request",
            method=request.method,
            path=request.path,
            route=canonical,
            status=status,
            duration_ms=round(elapsed * 1000, 2),
            remote=request.remote,
        )
        metrics = request.app.get(METRICS)
        if metrics is not None:
            metrics.observe_request(request.method, canonical, status, elapsed)
        structlog.contextvars.clear_contextvars()
