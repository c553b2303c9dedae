"""The webhooks scenario's receiver: an organizer's endpoint on loopback, in the bench's
own process, that verifies every message with the standardwebhooks library and notes
when each arrived."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError


class WebhookReceiver:
    """Answers 204 to what verifies with `secret`, 401 to the rest; keeps the first
    arrival (wall clock, as PostgreSQL's timestamps are) of each webhook-id."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.webhook = Webhook(secret)
        self.arrived: dict[str, float] = {}
        self.requests = 0
        self.refused = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        at = time.time()
        body = await request.read()
        self.requests += 1
        try:
            self.webhook.verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.refused += 1
            return web.Response(status=401)
        self.arrived.setdefault(request.headers["webhook-id"], at)
        return web.Response(status=204)

    @property
    def verified(self) -> int:
        return len(self.arrived)

    @property
    def repeats(self) -> int:
        """Verified requests beyond the first of their webhook-id."""
        return self.requests - self.refused - len(self.arrived)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        """Serve on 127.0.0.1 at a free port until the block ends; yields the URL."""
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        try:
            yield self.url
        finally:
            await runner.cleanup()
