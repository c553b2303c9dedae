"""Endpoint declarations: who may call a route, what it reads and what it answers; and
reading a request's body, query and path, and answering JSON, as every route does.

One decorator states a route's role, request schemas, response schema and problems.
The auth middleware enforces the role, the wrapper validates the input, and the
OpenAPI document is generated from the same declaration, so they cannot drift apart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import marshmallow
from aiohttp import hdrs, web

from eventbook.errors import Problem, validation_problem
from eventbook.keys import CONFIG

PUBLIC: tuple[str, ...] | None = None
SIGNED_IN: tuple[str, ...] = ("organizer", "customer")
ORGANIZER: tuple[str, ...] = ("organizer",)
CUSTOMER: tuple[str, ...] = ("customer",)
# Not a user's role: whoever holds EVENTBOOK_METRICS_TOKEN (a Prometheus server).
SCRAPER: tuple[str, ...] = ("scraper",)

Handler = Callable[..., Awaitable[web.StreamResponse]]


@dataclasses.dataclass(frozen=True)
class Endpoint:
    summary: str
    roles: tuple[str, ...] | None
    body: marshmallow.Schema | None = None
    query: marshmallow.Schema | None = None
    response: marshmallow.Schema | None = None
    status: int = 200
    # problem codes by status, for the document: {409: ["sold_out"]}
    problems: dict[int, list[str]] = dataclasses.field(default_factory=dict)
    headers: tuple[str, ...] = ()
    tag: str = ""
    description: str = ""
    # what the success response is, for the document; JSON unless it says otherwise
    media_type: str = "application/json"
    # when a repeat of the request answers 200 with what the first made, for the
    # document (an Idempotency-Key header documents its own replays)
    replay: str = ""


def endpoint(
    summary: str,
    *,
    roles: tuple[str, ...] | None,
    body: marshmallow.Schema | None = None,
    query: marshmallow.Schema | None = None,
    response: marshmallow.Schema | None = None,
    status: int = 200,
    problems: dict[int, list[str]] | None = None,
    headers: tuple[str, ...] = (),
    tag: str = "",
    description: str = "",
    media_type: str = "application/json",
    replay: str = "",
) -> Callable[[Handler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """Declare a route; the handler receives validated `body` and `query` keyword args."""
    spec = Endpoint(
        summary, roles, body, query, response, status, problems or {}, headers, tag, description,
        media_type, replay,
    )

    def decorate(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            kwargs: dict[str, Any] = {}
            if spec.query is not None:
                kwargs["query"] = load_query(request, spec.query)
            if spec.body is not None:
                kwargs["body"] = spec.body.load(await read_json(request))
            return await handler(request, **kwargs)

        wrapper.endpoint = spec  # type: ignore[attr-defined]
        return wrapper

    return decorate


def endpoint_of(request: web.Request) -> Endpoint | None:
    return getattr(request.match_info.handler, "endpoint", None)


def load_query(request: web.Request, schema: marshmallow.Schema) -> Any:
    raw: dict[str, str] = {}
    for key in request.query:
        values = request.query.getall(key)
        if len(values) > 1:
            raise validation_problem({key: ["Give this parameter once."]})
        raw[key] = values[0]
    return schema.load(raw)


def single_header(request: web.Request, name: str) -> str | None:
    """The value of a header that can only mean one thing, or None when absent. Sent
    twice it is ambiguous (which token? which key?), so it is refused rather than one
    of them picked."""
    values = request.headers.getall(name, ())
    if len(values) > 1:
        raise Problem(400, "repeated_header", f"Send the {name} header once.")
    return values[0] if values else None


def refuse_content_encoding(request: web.Request) -> None:
    """415 for a body sent with a Content-Encoding other than identity. Bodies are small
    JSON, so compressing them gains little, and inflating them is how a few bytes on the
    wire become a gigabyte in memory: they are refused before a byte is read (the app
    runs aiohttp with auto_decompress off, see app.create_app)."""
    for value in request.headers.getall(hdrs.CONTENT_ENCODING, ()):
        for coding in value.split(","):
            if coding.strip().lower() not in ("", "identity"):
                raise Problem(
                    415, "unsupported_content_encoding",
                    "Send the body uncompressed: no Content-Encoding, or identity.",
                    headers={"Accept-Encoding": "identity"},
                )


async def read_json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body reads as {}. A body that does not arrive
    in full within the configured time is 408: a client trickling it in would otherwise
    hold the connection and the handler for as long as it likes."""
    refuse_content_encoding(request)
    try:
        async with asyncio.timeout(request.app[CONFIG].body_timeout_seconds):
            data = await request.read()
    except TimeoutError:
        # The rest of the body may never come: the connection is not reused.
        raise Problem(
            408, "request_timeout", "The request body did not arrive in time.",
            headers={"Connection": "close"},
        ) from None
    if not data.strip():
        return {}
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise Problem(
            415, "unsupported_media_type", "Send the body as application/json."
        )
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise Problem(400, "malformed_json", "The body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise validation_problem({"_schema": ["Send a JSON object."]})
    return value


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=json.dumps(data, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def path_uuid(request: web.Request, name: str, code: str, detail: str) -> uuid.UUID:
    """The UUID in path segment `name`; a malformed one is as unknown as a missing one."""
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise Problem(404, code, detail) from None
