"""Accounts and their requests against real `eventbook` processes, each request's fate
recorded: an HTTP answer, or none at all."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import aiohttp
import asyncpg

from eventbook.auth import Tokens
from eventbook.config import Config
from tests.seed import insert_event, insert_users


@dataclasses.dataclass(frozen=True)
class Account:
    """A user seeded in SQL, with a token the servers accept."""

    id: uuid.UUID
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclasses.dataclass(frozen=True)
class Answer:
    """What became of one request: `status` and `body`, or `error` when no HTTP answer
    came back (connection refused or reset, timeout)."""

    status: int | None
    body: Any
    started: float  # time.monotonic() when it was sent
    seconds: float
    content_type: str = ""
    error: str = ""

    def within(self, start: float, end: float) -> bool:
        """Sent and answered between the two time.monotonic() readings."""
        return start <= self.started and self.started + self.seconds <= end

    @property
    def booking_id(self) -> uuid.UUID:
        assert self.status == 201, self
        return uuid.UUID(self.body["id"])


def tokens(config: Config) -> Tokens:
    assert config.jwt_secret is not None
    return Tokens(config.jwt_secret, config.jwt_issuer, config.jwt_audience,
                  config.jwt_ttl_seconds)


async def seed_accounts(
    pool: asyncpg.Pool, config: Config, count: int, role: str = "customer"
) -> list[Account]:
    """`count` users written straight to the database, each with a valid token."""
    issuer = tokens(config)
    return [Account(user, issuer.issue(user, role))
            for user in await insert_users(pool, count, role)]


async def seed_events(
    pool: asyncpg.Pool, *capacities: int, organizer: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """Events of one organizer (a new one unless given), one per capacity."""
    if organizer is None:
        [organizer] = await insert_users(pool, 1, role="organizer")
    return [await insert_event(pool, organizer, capacity) for capacity in capacities]


async def call(
    session: aiohttp.ClientSession, method: str, url: str, *,
    customer: Account | None = None, timeout: float = 15, **kwargs: Any,
) -> Answer:
    headers = dict(kwargs.pop("headers", {}))
    if customer is not None:
        headers.update(customer.headers)
    started = time.monotonic()
    try:
        async with session.request(
            method, url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout), **kwargs
        ) as response:
            text = await response.text()
            body = json.loads(text) if "json" in response.content_type else text
            return Answer(response.status, body, started, time.monotonic() - started,
                          response.content_type)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Answer(None, None, started, time.monotonic() - started, error=repr(exc))


async def book(
    session: aiohttp.ClientSession, base_url: str, customer: Account, event: uuid.UUID,
    quantity: int = 1,
) -> Answer:
    return await call(session, "POST", f"{base_url}/api/v1/events/{event}/bookings",
                      customer=customer, json={"quantity": quantity})


async def run_clients(clients: int, requests: Sequence[Callable[[], Awaitable[Answer]]]
                      ) -> list[Answer]:
    """Make the requests, `clients` at a time; their answers in the order of `requests`."""
    answers: list[Answer | None] = [None] * len(requests)
    todo = iter(range(len(requests)))

    async def client() -> None:
        for n in todo:
            answers[n] = await requests[n]()

    await asyncio.gather(*(client() for _ in range(clients)))
    return [answer for answer in answers if answer is not None]


def created(answers: Iterable[Answer]) -> list[uuid.UUID]:
    """The bookings answered 201."""
    return [answer.booking_id for answer in answers if answer.status == 201]
