"""Schemathesis against the running app, from the app's own /openapi.json.

Every operation gets generated requests, valid and invalid, sent with a real customer's
or organizer's token (whichever role the operation names) and, most of the time, with
path ids of objects that exist, so the handlers are exercised and not only the 401s
and 404s in front of them. Every answer must be in the document (status, content type,
body and headers), no answer may be a 5xx, and every error must be problem+json.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from eventbook.app import create_app
from eventbook.config import Config
from eventbook.openapi import documented_routes
from tests.live import LiveServer, World

EXAMPLES_PER_OPERATION = 60
# aiohttp's HTTP parser refuses a request line or header line longer than 8190 bytes
# with a plain-text 400 before the app (and its problem+json middleware) sees it.
HTTP_LINE_LIMIT = 8000


@pytest.fixture
def world(live_server: LiveServer) -> World:
    return World(live_server.url)


@pytest.fixture
def api_schema(live_server: LiveServer) -> Any:
    """The document as the running app serves it."""
    loaded = schemathesis.openapi.from_url(f"{live_server.url}/openapi.json")
    loaded.config.update(base_url=live_server.url)
    return loaded


def operations() -> list[tuple[str, str]]:
    """(method, path) of every documented route, known before any server runs."""
    config = Config(
        database_url="postgresql://unused/unused", redis_url="redis://unused",
        jwt_secret="x" * 32,
    )
    return [
        (route.method, route.resource.canonical)
        for route in documented_routes(create_app(config, actors=False))
        if route.resource is not None
    ]


def within_http_line_limits(case: Any, base_url: str) -> bool:
    """Whether aiohttp will parse the request at all (see HTTP_LINE_LIMIT)."""
    sent = case.as_transport_kwargs(base_url=base_url)
    prepared = requests.Request(
        sent["method"], sent["url"], params=sent.get("params"), headers=sent.get("headers")
    ).prepare()
    target = prepared.path_url
    headers = prepared.headers.items()
    return len(target) < HTTP_LINE_LIMIT and all(
        len(name) + len(str(value)) < HTTP_LINE_LIMIT for name, value in headers
    )


def problem_details(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx and 5xx is RFC 9457 problem+json carrying the request's id."""
    if response.status_code < 400:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.startswith("application/problem+json"), (
        f"{response.status_code} answered as {content_type!r}"
    )
    body = response.json()
    assert body["status"] == response.status_code
    assert body["request_id"] == response.headers["x-request-id"][0]
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]


@pytest.mark.parametrize(("method", "path"), operations())
def test_every_answer_is_in_the_document(
    method: str, path: str, api_schema: Any, world: World
) -> None:
    operation = api_schema[path][method]
    role = world.role_for(operation.definition.raw.get("x-roles", []))
    headers = {"Authorization": f"Bearer {world.tokens[role]}"} if role else {}
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def answers_conform(case: Any) -> None:
        for parameter in ("id", "type_id"):
            if parameter not in (case.path_parameters or {}):
                continue
            generated = str(case.path_parameters[parameter])
            # Three times in four, aim at an object that exists (valid ids only, so a
            # negative case stays negative).
            try:
                use_existing = uuid.UUID(generated).int % 4 != 0
            except ValueError:
                use_existing = False
            if use_existing:
                case.path_parameters[parameter] = world.existing_id(path, parameter)
        assume(within_http_line_limits(case, world.base_url))
        case.call_and_validate(
            base_url=world.base_url,
            session=world.session,
            headers=headers,
            checks=CHECKS,
            additional_checks=[problem_details],
            timeout=10,
        )

    answers_conform()
