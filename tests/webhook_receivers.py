"""Real webhook receivers for the tests: aiohttp servers on loopback that verify each
message with the standardwebhooks library, as an organizer's system would."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from tests.client import Api, User, eventually, expect


@dataclasses.dataclass
class Received:
    """One request as it arrived: its headers, body, and whether it verified."""

    headers: dict[str, str]
    body: bytes
    verified: Any  # the parsed payload, or None when the signature did not verify

    @property
    def message_id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    """Answers each request with `answer(request)` (default 204) after verifying it with
    `secrets` (any of them may match), and keeps what it received."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        self.secrets = secrets or []
        self.received: list[Received] = []
        self.answer: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None
        self.url = ""
        self.arrived = asyncio.Event()

    def verify(self, body: bytes, headers: dict[str, str]) -> Any:
        for secret in self.secrets:
            try:
                return Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.received.append(Received(headers, body, self.verify(body, headers)))
        self.arrived.set()
        if self.answer is not None:
            return await self.answer(request)
        return web.Response(status=204)

    @property
    def verified(self) -> list[Received]:
        return [r for r in self.received if r.verified is not None]

    def message_ids(self, verified_only: bool = True) -> set[str]:
        return {r.message_id for r in (self.verified if verified_only else self.received)}

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(r.body) for r in self.verified]


@asynccontextmanager
async def receiving(
    receiver: Receiver | None = None, path: str = "/hook", *, cancel_on_hang_up: bool = False
) -> AsyncIterator[Receiver]:
    """A receiver serving on 127.0.0.1 at a free port until the block ends. With
    `cancel_on_hang_up`, a request whose sender hangs up has its `answer` cancelled, so
    an answer that never comes ends when the sender gives up waiting."""
    receiver = receiver or Receiver()
    app = web.Application()
    app.router.add_post(path, receiver.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1, handler_cancellation=cancel_on_hang_up)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    receiver.url = f"http://127.0.0.1:{port}{path}"
    try:
        yield receiver
    finally:
        await runner.cleanup()


async def once_recorded(api: Api, organizer: User, path: str, timeout: float = 10) -> Any:
    """GET `path` (one delivery, or a page of them) once none in it is pending any more.
    A receiver has a message before its sender has the answer and records it, so what
    the receiver saw says nothing yet of what the deliveries list shows."""

    async def read() -> Any:
        shown = await expect(await api.get(path, organizer), 200)
        items = shown["items"] if "items" in shown else [shown]
        return shown if items and all(d["status"] != "pending" for d in items) else None

    return await eventually(read, timeout=timeout)
