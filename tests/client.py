"""A thin HTTP client for tests: builds the world (users, events, bookings) in a line each."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import inspect
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import asyncpg
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families

from eventbook.keys import CONFIG, TOKENS
from eventbook.pages import PageQuery
from tests import seed

_serial = itertools.count()
T = TypeVar("T")


@dataclasses.dataclass
class User:
    id: str
    email: str
    role: str
    token: str
    password: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def future(days: float = 7) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).isoformat()


def item(ticket_type: dict[str, Any], quantity: int) -> dict[str, Any]:
    """One line of a booking's or a hold's `items`."""
    return {"ticket_type_id": ticket_type["id"], "quantity": quantity}


async def eventually(
    check: Callable[[], Awaitable[T] | T], timeout: float = 15.0, interval: float = 0.05
) -> T:
    """Poll `check` (plain or async) until it gives something truthy, which is returned;
    fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r} after {timeout}s")
        await asyncio.sleep(interval)


async def expect(answer: ClientResponse, status: int) -> Any:
    """The JSON body of an answer that must have `status`."""
    assert answer.status == status, await answer.text()
    return await answer.json()


class Api:
    def __init__(self, client: TestClient[web.Request, web.Application]) -> None:
        self.client = client
        self.app = client.app

    async def request(
        self, method: str, path: str, user: User | None = None, **kwargs: Any
    ) -> ClientResponse:
        # A multidict, so a test can send a header twice ([(name, a), (name, b)]).
        headers = CIMultiDict(kwargs.pop("headers", None) or {})
        if user is not None:
            headers.update(user.headers)
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def get(self, path: str, user: User | None = None, **kwargs: Any) -> ClientResponse:
        return await self.request("GET", path, user, **kwargs)

    async def post(self, path: str, user: User | None = None, **kwargs: Any) -> ClientResponse:
        return await self.request("POST", path, user, **kwargs)

    async def patch(self, path: str, user: User | None = None, **kwargs: Any) -> ClientResponse:
        return await self.request("PATCH", path, user, **kwargs)

    async def delete(self, path: str, user: User | None = None, **kwargs: Any) -> ClientResponse:
        return await self.request("DELETE", path, user, **kwargs)

    async def add_ticket_type(
        self, organizer: User, event: dict[str, Any], **fields: Any
    ) -> dict[str, Any]:
        body = {"name": f"Type {next(_serial)}", "price_cents": 0, **fields}
        answer = await self.post(
            f"/api/v1/events/{event['id']}/ticket-types", organizer, json=body
        )
        assert answer.status == 201, await answer.text()
        created: dict[str, Any] = await answer.json()
        return created

    async def ticket_types(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        answer = await self.get(f"/api/v1/events/{event['id']}/ticket-types")
        assert answer.status == 200, await answer.text()
        types: list[dict[str, Any]] = (await answer.json())["items"]
        return types

    async def hold(
        self, customer: User, event: dict[str, Any], key: str | None = None, **body: Any
    ) -> ClientResponse:
        headers = {"Idempotency-Key": key} if key else {}
        return await self.post(
            f"/api/v1/events/{event['id']}/holds", customer, json=body, headers=headers
        )

    async def confirm(
        self, customer: User, hold: dict[str, Any], **body: Any
    ) -> ClientResponse:
        return await self.post(f"/api/v1/holds/{hold['id']}/confirm", customer, json=body)

    async def join_waitlist(
        self, customer: User, event: dict[str, Any], ticket_type: dict[str, Any] | None = None,
        **body: Any,
    ) -> ClientResponse:
        if ticket_type is not None:
            body["ticket_type_id"] = ticket_type["id"]
        return await self.post(f"/api/v1/events/{event['id']}/waitlist", customer, json=body)

    async def waitlist_entry(self, customer: User, entry: dict[str, Any]) -> dict[str, Any]:
        answer = await self.get(f"/api/v1/waitlist/{entry['id']}", customer)
        assert answer.status == 200, await answer.text()
        shown: dict[str, Any] = await answer.json()
        return shown

    async def register(
        self, role: str = "customer", email: str | None = None, password: str = "correct horse",
        name: str = "Test Person",
    ) -> User:
        email = email or f"user{next(_serial)}-{uuid.uuid4().hex[:8]}@example.com"
        answer = await self.post(
            "/api/v1/auth/register",
            json={"email": email, "password": password, "name": name, "role": role},
        )
        assert answer.status == 201, await answer.text()
        body = await answer.json()
        return User(body["user"]["id"], email, role, body["access_token"], password)

    async def seed_users(
        self, pool: asyncpg.Pool, count: int, role: str = "customer"
    ) -> list[User]:
        """`count` users written straight to the database (tests.seed), each with a token:
        no password hashing, so hundreds cost milliseconds. They cannot log in."""
        tokens = self.app[TOKENS]
        return [
            User(str(user.id), user.email, role, tokens.issue(user.id, role), "")
            for user in await seed.seed_users(pool, count, role)
        ]

    async def login(self, email: str, password: str, **kwargs: Any) -> ClientResponse:
        return await self.post(
            "/api/v1/auth/login", json={"email": email, "password": password}, **kwargs
        )

    async def create_event(self, organizer: User, **fields: Any) -> dict[str, Any]:
        body = {"title": "Concert", "starts_at": future(), "capacity": 100, **fields}
        answer = await self.post("/api/v1/events", organizer, json=body)
        assert answer.status == 201, await answer.text()
        event: dict[str, Any] = await answer.json()
        return event

    async def get_event(self, event: dict[str, Any]) -> dict[str, Any]:
        answer = await self.get(f"/api/v1/events/{event['id']}")
        assert answer.status == 200, await answer.text()
        body: dict[str, Any] = await answer.json()
        return body

    async def book(
        self, customer: User, event: dict[str, Any], quantity: int | None = 1,
        key: str | None = None, items: list[dict[str, Any]] | None = None,
    ) -> ClientResponse:
        """Book a `quantity` of the event's only ticket type, or `items` of named types."""
        headers = {"Idempotency-Key": key} if key else {}
        if items is not None:
            body: dict[str, Any] = {"items": items}
        else:
            body = {} if quantity is None else {"quantity": quantity}
        return await self.post(
            f"/api/v1/events/{event['id']}/bookings", customer, json=body, headers=headers
        )


def list_routes(app: web.Application) -> list[tuple[str, tuple[str, ...] | None]]:
    """(path template, roles) of every route that answers a page of items."""
    found = []
    for route in app.router.routes():
        spec = getattr(route.handler, "endpoint", None)
        if route.method == "GET" and spec is not None and isinstance(spec.query, PageQuery):
            assert route.resource is not None
            found.append((route.resource.canonical, spec.roles))
    return found


def metrics_headers(api: Api) -> dict[str, str]:
    """What a scraper sends to the API port: the app's metrics token."""
    return {"Authorization": f"Bearer {api.app[CONFIG].metrics_token}"}


async def metric(api: Api, name: str, **labels: str) -> float | None:
    """One sample's value at GET /metrics (a counter by its full name, `..._total`);
    None when no such sample is exposed. The outbox and stream gauges are those of the
    last background refresh: wait for them with `metric_becomes`."""
    answer = await api.get("/metrics", headers=metrics_headers(api))
    assert answer.status == 200, await answer.text()
    for family in text_string_to_metric_families(await answer.text()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


async def metric_becomes(api: Api, name: str, value: float, timeout: float = 15.0,
                         **labels: str) -> None:
    """Wait until a sample shows `value` (a gauge the background refresh reads)."""

    async def shows() -> bool:
        return await metric(api, name, **labels) == value

    await eventually(shows, timeout=timeout)


async def scrape_private_port(port: int) -> tuple[str, int]:
    """What a private metrics port (`--metrics-port`) serves: the /metrics text, and the
    status of its /readyz."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as answer:
            assert answer.status == 200
            text = await answer.text()
        async with session.get(f"http://127.0.0.1:{port}/readyz") as answer:
            return text, answer.status
