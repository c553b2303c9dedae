"""Real PostgreSQL and Redis for every test: embedded ones started once per session, or
the servers named by TEST_DATABASE_URL / TEST_REDIS_URL. Each test gets its own
database (copied from a migrated template) and its own Redis key prefix."""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from email import message_from_bytes
from email.message import Message as EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from eventbook import connections, db
from eventbook.app import create_app
from eventbook.config import Config
from eventbook.embedded import EmbeddedServices, free_port
from tests.client import Api
from tests.live import LiveServer

TEMPLATE = f"eventbook_template_{os.getpid()}"
METRICS_TOKEN = "test-metrics-token-" + "m" * 16


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


class Servers:
    def __init__(self, database_url: str, redis_url: str, embedded: EmbeddedServices | None):
        self.database_url = database_url  # an admin database to create test databases from
        self.redis_url = redis_url
        self.embedded = embedded
        self.dropper: Dropper | None = None


class Dropper:
    """Drops the databases of finished tests in a thread of its own: a DROP DATABASE
    waits for a checkpoint (about 0.1 s), which no test needs to wait for."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.names: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=asyncio.run, args=(self._drop_each(),),
                                       name="drop-test-databases", daemon=True)
        self.thread.start()

    async def _drop_each(self) -> None:
        while (name := await asyncio.to_thread(self.names.get)) is not None:
            await _drop_database(self.admin_url, name)

    def drop(self, name: str) -> None:
        self.names.put(name)

    def close(self) -> None:
        """Drop what is queued, then stop."""
        self.names.put(None)
        self.thread.join()


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    database_url = os.environ.get("TEST_DATABASE_URL")
    redis_url = os.environ.get("TEST_REDIS_URL")
    embedded = None
    if not (database_url and redis_url):
        embedded = EmbeddedServices(Path(tmp_path_factory.mktemp("servers")))
        started_db, started_redis = embedded.start(
            postgres=not database_url, redis=not redis_url
        )
        database_url = database_url or started_db
        redis_url = redis_url or started_redis
    assert database_url and redis_url
    admin = with_database(database_url, "postgres")
    asyncio.run(_create_template(admin))
    servers = Servers(admin, redis_url, embedded)
    servers.dropper = Dropper(admin)
    try:
        yield servers
    finally:
        servers.dropper.close()
        asyncio.run(_drop_database(admin, TEMPLATE))
        if embedded is not None:
            embedded.release()


async def _create_template(admin_url: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
        await conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(with_database(admin_url, TEMPLATE))
    try:
        await db.migrate(conn)
    finally:
        await conn.close()


async def _drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def base_config(database_url: str, redis_url: str, **overrides: Any) -> Config:
    """Test settings: cheap password hashing, a private Redis prefix, quick reclaim; no
    sign-up, booking or browsing limits and room for many hashes at once, as tests make
    users by the dozen from one address (the limits' own tests set them); /metrics
    served with a token and its gauges read often."""
    settings: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "jwt_secret": "test-secret-" + "x" * 40,
        "redis_prefix": f"test:{uuid.uuid4().hex[:12]}:",
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,
        "db_pool_min": 1,
        "db_pool_max": 10,
        "booking_rate": 0,
        "signup_ip_limit": 0,
        "hash_queue": 1000,
        "browse_rate": 0,
        "metrics_token": METRICS_TOKEN,
        "metrics_refresh_seconds": 0.2,
        "log_format": "json",
    }
    settings.update(overrides)
    return Config(**settings)


@pytest.fixture
async def database(servers: Servers) -> AsyncIterator[str]:
    """A fresh, migrated database for this test; its URL."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(servers.database_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    finally:
        await conn.close()
    yield with_database(servers.database_url, name)
    if servers.dropper is not None:
        servers.dropper.drop(name)
    else:
        await _drop_database(servers.database_url, name)


@pytest.fixture
def config(database: str, servers: Servers) -> Config:
    return base_config(database, servers.redis_url)


@pytest.fixture
async def pool(config: Config) -> AsyncIterator[asyncpg.Pool]:
    """A direct connection pool for seeding and checking the database (the server itself,
    when the app reaches it through a pooler)."""
    assert config.direct_url is not None
    pool = await connections.create_pool(config.direct_url, 1, 5)
    yield pool
    await pool.close()


MakeClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
def make_api(config: Config, aiohttp_client: Any) -> Callable[..., Awaitable[Api]]:
    """Start the app (HTTP only unless actors=True) and return a client for it."""

    async def make(actors: bool = False, **overrides: Any) -> Api:
        app_config = config.replace(**overrides) if overrides else config
        client = await aiohttp_client(create_app(app_config, actors=actors))
        return Api(client)

    return make


@pytest.fixture
async def api(make_api: Callable[..., Awaitable[Api]]) -> Api:
    return await make_api()


@pytest.fixture
async def holds_api(config: Config, aiohttp_client: Any) -> Api:
    """The app with the holds actor running (and no other), holds lasting one second."""
    app_config = config.replace(actors=("holds",), hold_seconds=1)
    return Api(await aiohttp_client(create_app(app_config, actors=True)))


@pytest.fixture
def make_webhooks_api(config: Config, aiohttp_client: Any) -> Callable[..., Awaitable[Api]]:
    """Start the app with the relay and the webhooks actor running (and no other),
    webhooks allowed to loopback receivers over http, and retries a fraction of a second
    apart; `overrides` change any of these settings (actors=... names other actors)."""

    async def make(**overrides: Any) -> Api:
        app_config = config.replace(**{
            "actors": ("relay", "webhooks"), "webhook_allow_private": True,
            "webhook_allow_http": True, "webhook_retry_schedule": (0.2, 0.4, 0.8),
            **overrides,
        })
        return Api(await aiohttp_client(create_app(app_config, actors=True)))

    return make


@pytest.fixture
async def webhooks_api(make_webhooks_api: Callable[..., Awaitable[Api]]) -> Api:
    return await make_webhooks_api()


@pytest.fixture
def live_server(config: Config) -> Iterator[LiveServer]:
    """The app (HTTP only) on a real port, for clients that block."""
    with LiveServer(create_app(config, actors=False)) as server:
        yield server


@pytest.fixture
async def organizer(api: Api) -> Any:
    return await api.register(role="organizer")


@pytest.fixture
async def customer(api: Api) -> Any:
    return await api.register(role="customer")


# -- a real SMTP server ---------------------------------------------------------------


class Inbox:
    """An aiosmtpd handler that keeps every mail it accepts."""

    def __init__(self) -> None:
        self.mails: list[tuple[list[str], EmailMessage]] = []
        self.logins: list[tuple[bytes, bytes]] = []

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                     auth_data: Any) -> AuthResult:
        self.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"secret")

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server() -> Iterator[tuple[str, Inbox]]:
    inbox = Inbox()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=free_port(), authenticator=inbox.authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield f"smtp://robot:secret@127.0.0.1:{controller.port}", inbox
    finally:
        controller.stop()
