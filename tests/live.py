"""The app on a real port, for clients that block (requests, schemathesis), and the
users and objects such clients act on."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import requests
from aiohttp import web

from tests.client import future


class LiveServer:
    """The app on a real port, run by a thread with its own event loop, for clients that
    block (requests, schemathesis). `with LiveServer(app) as server: server.url`."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="live-server", daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        self._started.wait(60)
        if self._error is not None:
            raise self._error
        assert self.url, "the live server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(60)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(self.app)
        try:
            self._loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            host, port = runner.addresses[0][:2]
            self.url = f"http://{host}:{port}"
        except BaseException as exc:
            self._error = exc
            self._started.set()
            self._loop.run_until_complete(runner.cleanup())
            self._loop.close()
            return
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(runner.cleanup())
            self._loop.close()


class World:
    """The users and objects the generated requests act on."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.tokens = {role: self._register(role) for role in ("customer", "organizer")}
        self.event_id = self._post(
            "/api/v1/events", "organizer",
            {"title": "Fuzz fest", "starts_at": future(), "capacity": 1000},
        )["id"]
        self.booking_id = self._post(
            f"/api/v1/events/{self.event_id}/bookings", "customer", {"quantity": 1}
        )["id"]
        self.hold_id = self._post(
            f"/api/v1/events/{self.event_id}/holds", "customer", {"quantity": 1}
        )["id"]
        self.ticket_type_id = self.session.get(
            f"{self.base_url}/api/v1/events/{self.event_id}/ticket-types"
        ).json()["items"][0]["id"]
        # A public address, never called: the live server runs no actors.
        self.webhook_id = self._post(
            "/api/v1/webhooks", "organizer", {"url": "https://8.8.8.8/eventbook-hook"}
        )["id"]
        ping = self.session.post(
            f"{self.base_url}/api/v1/webhooks/{self.webhook_id}/ping",
            headers={"Authorization": f"Bearer {self.tokens['organizer']}"},
        )
        assert ping.status_code == 202, ping.text
        self.delivery_id = ping.json()["id"]

    def _register(self, role: str) -> str:
        answer = self.session.post(
            f"{self.base_url}/api/v1/auth/register",
            json={"email": f"{role}-{uuid.uuid4().hex[:8]}@example.com",
                  "password": "correct horse", "name": "Fuzz", "role": role},
        )
        assert answer.status_code == 201, answer.text
        token: str = answer.json()["access_token"]
        return token

    def _post(self, path: str, role: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.session.post(
            f"{self.base_url}{path}", json=body,
            headers={"Authorization": f"Bearer {self.tokens[role]}"},
        )
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        return created

    def role_for(self, roles: list[str]) -> str | None:
        if not roles:
            return None
        return "organizer" if roles == ["organizer"] else "customer"

    def existing_id(self, path: str, parameter: str = "id") -> str:
        """The id of an object that exists, for path parameter `parameter` of `path`."""
        if parameter == "type_id":
            return self.ticket_type_id
        if parameter == "delivery_id":
            return str(self.delivery_id)
        if path.startswith("/api/v1/webhooks"):
            return str(self.webhook_id)
        if path.startswith("/api/v1/bookings"):
            return self.booking_id
        if path.startswith("/api/v1/holds"):
            return self.hold_id
        return self.event_id
