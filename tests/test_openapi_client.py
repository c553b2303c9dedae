"""A Python client generated from the document the running app serves drives that app:
the document is only as good as the client it makes.

openapi-python-client (the `test` extra) writes the client into the test's tmp_path from
GET /openapi.json, with any warning about the document failing the test; the tests import
it, register, publish, book and read through it against the app, and check that error
answers come back as the document's `Problem` model (extra members and all) with a `code`
the document lists. Every client raises on a status its operation does not document."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.client import Api

PACKAGE = "eventbook_client"
BOOK = "/api/v1/events/{id}/bookings"


def generate(document: bytes, into: Path) -> Path:
    """Generate the client package from `document` into `into`; its directory. The
    generator's post hooks run ruff, which the venv has: its bin goes first on PATH."""
    pytest.importorskip(
        "openapi_python_client",
        reason="openapi-python-client is not installed (pip install -e '.[test]')",
    )
    source = into / "openapi.json"
    source.write_bytes(document)
    package = into / PACKAGE
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(source),
         "--output-path", str(package), "--meta", "none", "--fail-on-warning"],
        capture_output=True, text=True, timeout=120, env=env, cwd=into,
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    # Anything beyond its "Generating ..." line is a warning about the document.
    assert said.strip() == f"Generating {package}", said
    return package


@pytest.fixture
async def document(api: Api) -> bytes:
    answer = await api.get("/openapi.json")
    assert answer.status == 200
    return await answer.read()


@pytest.fixture
def client_package(document: bytes, tmp_path: Path) -> Iterator[ModuleType]:
    """The generated client package, imported; forgotten again after the test."""
    generate(document, tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def connect(package: ModuleType, base_url: str, token: str | None = None) -> Any:
    """A client of the generated package; any status the document does not list for an
    operation raises (errors.UnexpectedStatus) instead of parsing to None."""
    if token is None:
        return package.Client(base_url=base_url, raise_on_unexpected_status=True)
    return package.AuthenticatedClient(
        base_url=base_url, token=token, raise_on_unexpected_status=True
    )


def module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def promised(document: bytes, method: str, path: str, status: int) -> list[str]:
    """The problem codes the document lists for one answer of one operation."""
    response = json.loads(document)["paths"][path][method]["responses"][str(status)]
    assert response["content"]["application/problem+json"]["schema"] == {
        "$ref": "#/components/schemas/Problem"
    }
    return re.findall(r"`([a-z_]+)`", response["description"].split("`code`:", 1)[1])


async def test_a_generated_client_registers_books_and_reads_a_booking(
    api: Api, client_package: ModuleType
) -> None:
    base_url = str(api.client.make_url("")).rstrip("/")
    models = module("models")
    register = module("api.accounts.register")

    async with connect(client_package, base_url) as anonymous:

        async def sign_up(role: str) -> Any:
            answer = await register.asyncio_detailed(
                client=anonymous,
                body=models.Register(
                    email=f"{role}-{uuid.uuid4().hex[:8]}@example.com",
                    password="a long password", name=role.title(),
                    role=models.RegisterRole(role),
                ),
            )
            assert answer.status_code == 201, answer.content
            session = answer.parsed
            assert isinstance(session, models.Session)
            assert session.token_type == "Bearer"
            assert session.user.role == models.UserRole(role)
            return session

        olga, carl = await sign_up("organizer"), await sign_up("customer")
        organizer = connect(client_package, base_url, olga.access_token)
        customer = connect(client_package, base_url, carl.access_token)
        async with organizer, customer:
            await walk(models, anonymous, organizer, customer, olga, carl)


async def walk(models: Any, anonymous: Any, organizer: Any, customer: Any, olga: Any,
               carl: Any) -> None:
    """Publish as the organizer, find the event anonymously, book and read as the customer."""
    create_event = module("api.events.create_event")
    list_events = module("api.events.list_events")
    book = module("api.bookings.book")
    get_booking = module("api.bookings.get_booking")
    starts_at = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=30)
    event = await create_event.asyncio(
        client=organizer,
        body=models.NewEvent(
            title="Jazz night", venue="Cellar", starts_at=starts_at, capacity=3
        ),
    )
    assert isinstance(event, models.Event), event
    assert (event.organizer_id, event.starts_at) == (olga.user.id, starts_at)
    assert event.status == models.EventStatus.SCHEDULED
    assert event.available_tickets == 3

    listed = await list_events.asyncio(client=anonymous, q="jazz", available=True, limit=5)
    assert isinstance(listed, models.EventPage), listed
    assert [e.id for e in listed.items] == [event.id]

    key = uuid.uuid4().hex
    made = await book.asyncio_detailed(
        event.id, client=customer, body=models.NewBooking(quantity=2), idempotency_key=key
    )
    assert made.status_code == 201, made.content
    booking = made.parsed
    assert isinstance(booking, models.Booking)
    assert (booking.event_id, booking.user_id, booking.quantity) == (
        event.id, carl.user.id, 2
    )
    assert booking.status == models.BookingStatus.CONFIRMED
    assert booking.confirmed_at is None  # the actors do not run here

    replay = await book.asyncio_detailed(
        event.id, client=customer, body=models.NewBooking(quantity=2), idempotency_key=key
    )
    assert replay.status_code == 200, replay.content
    assert replay.parsed == booking
    assert replay.headers["X-Request-ID"]

    read = await get_booking.asyncio(booking.id, client=customer)
    assert read == booking
    read_by_organizer = await get_booking.asyncio(booking.id, client=organizer)
    assert read_by_organizer == booking


async def test_problems_come_back_as_the_documented_problem(
    api: Api, document: bytes, client_package: ModuleType
) -> None:
    """Each answer is parsed into the `Problem` model, with a `code` the document lists
    for that status."""
    base_url = str(api.client.make_url("")).rstrip("/")
    models = module("models")
    book = module("api.bookings.book")
    me = module("api.accounts.me")
    organizer = await api.register(role="organizer")
    customer = await api.register(role="customer")
    event = await api.create_event(organizer, capacity=1)
    event_id = uuid.UUID(event["id"])

    async with connect(client_package, base_url, customer.token) as client:
        bad = await book.asyncio_detailed(event_id, client=client,
                                          body=models.NewBooking(quantity=0))
        assert bad.status_code == 422
        assert bad.headers["Content-Type"].startswith("application/problem+json")
        problem = bad.parsed
        assert isinstance(problem, models.Problem), bad.content
        assert (problem.status, problem.code) == (422, "validation_failed")
        assert problem.code in promised(document, "post", BOOK, 422)
        assert problem.request_id == bad.headers["X-Request-ID"]
        assert "quantity" in problem.errors.additional_properties

        assert isinstance(await book.asyncio(event_id, client=client), models.Booking)
        sold_out = await book.asyncio_detailed(event_id, client=client)
        assert sold_out.status_code == 409
        problem = sold_out.parsed
        assert isinstance(problem, models.Problem), sold_out.content
        assert problem.code == "sold_out"
        assert problem.code in promised(document, "post", BOOK, 409)
        assert problem["available_tickets"] == 0  # a member beyond the declared ones

        unknown = await book.asyncio_detailed(uuid.uuid4(), client=client)
        assert unknown.status_code == 404
        assert isinstance(unknown.parsed, models.Problem)
        assert unknown.parsed.code == "event_not_found"
        assert unknown.parsed.code in promised(document, "post", BOOK, 404)

    async with connect(client_package, base_url, "not-a-jwt") as stranger:
        refused = await me.asyncio_detailed(client=stranger)
        assert refused.status_code == 401
        assert isinstance(refused.parsed, models.Problem)
        assert refused.parsed.code == "invalid_token"
        assert refused.parsed.code in promised(document, "get", "/api/v1/me", 401)
