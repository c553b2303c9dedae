"""The OpenAPI 3 document, generated from the routes' @endpoint declarations, and /docs.

Nothing here describes a route by hand. `build_document` walks the app's router and
turns each route's `Endpoint` (eventbook.endpoints) into an operation: path parameters,
query parameters, body, success response, the problems it declares plus those every
route of its kind can answer, its role and security. A route added anywhere appears
in the document without touching this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import Any

import structlog
import swagger_ui_bundle
from aiohttp import web
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import INCLUDE, Schema, fields

from eventbook import __version__
from eventbook.endpoints import PUBLIC, SCRAPER, SIGNED_IN, Endpoint, endpoint
from eventbook.errors import PROBLEM_JSON
from eventbook.keys import OPENAPI_DOCUMENT

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()

# Swagger UI 4, which /docs serves, reads OpenAPI 3.0 documents (not 3.1).
OPENAPI_VERSION = "3.0.3"
SECURITY_SCHEME = "bearerAuth"
METRICS_SECURITY_SCHEME = "metricsToken"

# Tags in reading order, with what they hold; a tag not listed here follows them.
TAGS = {
    "accounts": "Register, log in, the signed-in user.",
    "events": "Publish, browse, change and cancel events; attendee lists.",
    "bookings": "Book tickets, read and cancel bookings.",
    "notifications": "The mails the signed-in user was sent.",
    "webhooks": (
        "An organizer's endpoints, to which bookings, expired holds and event changes are "
        "POSTed as they happen, signed the Standard Webhooks way; their deliveries."
    ),
    "operations": "Liveness, readiness and metrics, for operators and load balancers.",
    "documentation": "This document, and a page to read it.",
}

_PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}")

# Request headers an endpoint may declare (Endpoint.headers): the parameter's schema, and
# the extra success answers the header brings.
HEADER_PARAMETERS: dict[str, dict[str, Any]] = {
    "Idempotency-Key": {
        "description": (
            "Makes a retry safe: the same key with the same request answers the resource "
            "the first request made (200) instead of making another."
        ),
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
        "replay": True,
    },
}


class ProblemSchema(Schema):
    """RFC 9457 problem details, as every 4xx and 5xx answer carries them."""

    class Meta:
        # Problems may carry more members (sold_out has available_tickets).
        unknown = INCLUDE

    type = fields.String(required=True, metadata={"example": "urn:eventbook:problem:sold_out"})
    title = fields.String(required=True, metadata={"example": "Conflict"})
    status = fields.Integer(required=True, metadata={"example": 409})
    detail = fields.String(required=True, metadata={"example": "Only 2 tickets are left."})
    code = fields.String(
        required=True,
        metadata={"description": "A stable snake_case word to switch on.", "example": "sold_out"},
    )
    request_id = fields.String(
        required=True, allow_none=True,
        metadata={"description": "The X-Request-ID of the request, for support and logs."},
    )
    errors = fields.Dict(
        keys=fields.String(),
        metadata={"description": "On 422: the messages for each field that is not valid."},
    )


def problems_of(spec: Endpoint, has_path_params: bool) -> dict[int, list[str]]:
    """Every problem status a route can answer and its codes: declared and generic ones."""
    found: dict[int, list[str]] = {}

    def add(status: int, *codes: str) -> None:
        known = found.setdefault(status, [])
        known.extend(code for code in codes if code not in known)

    if spec.body is not None:
        add(400, "malformed_json")
        add(408, "request_timeout")
        add(413, "body_too_large")
        add(415, "unsupported_media_type", "unsupported_content_encoding")
        add(422, "validation_failed")
    if spec.query is not None:
        add(422, "validation_failed")
    if spec.roles is not PUBLIC or spec.headers:
        add(400, "repeated_header")
    if spec.roles is not PUBLIC:
        add(401, "unauthorized", "invalid_token")
    if spec.roles is not PUBLIC and spec.roles != SCRAPER:
        add(403, "forbidden_role")
    if has_path_params:
        add(404, "not_found")
    for status, codes in spec.problems.items():
        add(status, *codes)
    add(500, "internal_error")
    add(503, "service_unavailable")
    return dict(sorted(found.items()))


def role_sentence(roles: tuple[str, ...] | None) -> str:
    if roles is None:
        return "Anyone may call this; no token needed."
    if roles == SIGNED_IN:
        return "Needs a signed-in user's bearer token (any role)."
    if roles == SCRAPER:
        return "Needs the server's metrics token (EVENTBOOK_METRICS_TOKEN) as bearer token."
    return f"Needs a bearer token of the {' or '.join(roles)} role."


def _problem_response(status: int, codes: list[str], signed: bool) -> dict[str, Any]:
    headers: dict[str, Any] = {"X-Request-ID": "X-Request-ID"}
    if status == 401 and signed:
        headers["WWW-Authenticate"] = {
            "description": "Bearer, with error=\"invalid_token\" when the token is bad.",
            "required": True,
            "schema": {"type": "string"},
        }
    if status == 415 and "unsupported_content_encoding" in codes:
        headers["Accept-Encoding"] = {
            "description": "With `unsupported_content_encoding`: `identity`, the only "
                           "content coding a request body may have.",
            "schema": {"type": "string"},
        }
    if status in (429, 503):
        # Every 429 says when to retry; a 503 says it when waiting is likely to help.
        headers["Retry-After"] = {
            "description": "Seconds to wait before trying again.",
            "required": status == 429,
            "schema": {"type": "integer", "minimum": 0},
        }
    phrase = HTTPStatus(status).phrase
    listed = ", ".join(f"`{code}`" for code in codes)
    return {
        "description": f"{phrase}. `code`: {listed}.",
        "headers": headers,
        "content": {PROBLEM_JSON: {"schema": "Problem"}},
    }


def _success_content(spec: Endpoint) -> dict[str, Any]:
    if spec.media_type != "application/json" and spec.response is None:
        return {spec.media_type: {"schema": {"type": "string"}}}
    schema: Any = spec.response if spec.response is not None else {"type": "object"}
    return {spec.media_type: {"schema": schema}}


def operation_of(
    method: str, path: str, handler: Any, spec: Endpoint | None, operation_id: str
) -> dict[str, Any]:
    """The OpenAPI operation for one route."""
    if spec is None:
        # Undeclared (the document test forbids it); still listed, as public, so nothing
        # served is missing from the document.
        doc = (handler.__doc__ or "").strip().splitlines()
        spec = Endpoint(doc[0] if doc else operation_id, PUBLIC, media_type="*/*")
        log.warning("route_without_endpoint", method=method, path=path)
    path_params = _PATH_PARAM.findall(path)
    parameters: list[dict[str, Any]] = [
        {
            "in": "path",
            "name": name,
            "required": True,
            "schema": (
                {"type": "string", "format": "uuid"}
                if name == "id" or name.endswith("_id")
                else {"type": "string"}
            ),
        }
        for name in path_params
    ]
    if spec.query is not None:
        parameters.append({"in": "query", "schema": spec.query})
    success: dict[str, Any] = {
        "description": HTTPStatus(spec.status).phrase,
        "headers": {"X-Request-ID": "X-Request-ID"},
    }
    # A 204 has no body: documenting one would make clients expect (and parse) it.
    if spec.status != HTTPStatus.NO_CONTENT:
        success["content"] = _success_content(spec)
    responses: dict[str, Any] = {str(spec.status): success}
    for name in spec.headers:
        declared = HEADER_PARAMETERS.get(name, {"schema": {"type": "string"}})
        parameters.append(
            {
                "in": "header",
                "name": name,
                "required": False,
                "description": declared.get("description", ""),
                "schema": declared["schema"],
            }
        )
        if declared.get("replay") and spec.status != 200:
            responses["200"] = {
                "description": f"A replay: an earlier request with this {name} made it.",
                "headers": {"X-Request-ID": "X-Request-ID"},
                "content": _success_content(spec),
            }
    if spec.replay and spec.status != 200:
        responses["200"] = {
            "description": spec.replay,
            "headers": {"X-Request-ID": "X-Request-ID"},
            "content": _success_content(spec),
        }
    for status, codes in problems_of(spec, bool(path_params)).items():
        responses[str(status)] = _problem_response(status, codes, spec.roles is not PUBLIC)

    description = " ".join(part for part in (spec.description, role_sentence(spec.roles)) if part)
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": spec.summary,
        "description": description,
        "responses": responses,
        "x-roles": list(spec.roles or ()),
    }
    if spec.tag:
        operation["tags"] = [spec.tag]
    if parameters:
        operation["parameters"] = parameters
    if spec.body is not None:
        # An absent body reads as {}: it is required exactly when the schema refuses {}
        # (a PATCH with nothing to change, say), whatever its fields' own flags.
        required = bool(spec.body.validate({}))
        operation["requestBody"] = {
            "required": required,
            "content": {"application/json": {"schema": spec.body}},
        }
    if spec.roles == SCRAPER:
        operation["security"] = [{METRICS_SECURITY_SCHEME: []}]
    elif spec.roles is not PUBLIC:
        operation["security"] = [{SECURITY_SCHEME: []}]
    return operation


def documented_routes(app: web.Application) -> list[web.AbstractRoute]:
    """The routes the document lists: all but the HEAD twins aiohttp adds to GETs."""
    return [
        route for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    ]


def build_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document of every route `app` serves."""
    spec = APISpec(
        title="eventbook",
        version=__version__,
        openapi_version=OPENAPI_VERSION,
        plugins=[MarshmallowPlugin()],
        info={
            "description": (
                "Event booking: organizers publish events, customers book tickets. "
                "JSON in and out; errors are RFC 9457 problem details "
                "(application/problem+json) with a stable `code`. Send "
                "`Authorization: Bearer <access_token>` from register or login. "
                "A method a path does not list is answered 405 `method_not_allowed` "
                "with an `Allow` header naming the methods it does list "
                "(`components.responses.MethodNotAllowed`)."
            )
        },
    )
    spec.components.security_scheme(
        SECURITY_SCHEME, {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    spec.components.security_scheme(
        METRICS_SECURITY_SCHEME,
        {"type": "http", "scheme": "bearer",
         "description": "The server's EVENTBOOK_METRICS_TOKEN, for Prometheus."},
    )
    spec.components.schema("Problem", schema=ProblemSchema)
    spec.components.header(
        "X-Request-ID",
        {
            "description": "The request's id (the client's, when sane): quote it to support.",
            "required": True,
            "schema": {"type": "string"},
        },
    )
    # Not referenced by any operation (no listed method answers it): a 405 is the
    # answer to a method the path does not list.
    method_not_allowed = _problem_response(405, ["method_not_allowed"], signed=False)
    method_not_allowed["headers"]["Allow"] = {
        "description": "The methods the path lists.",
        "required": True,
        "schema": {"type": "string"},
    }
    spec.components.response("MethodNotAllowed", method_not_allowed)
    paths: dict[str, dict[str, Any]] = {}
    tags: list[str] = []
    used_ids: set[str] = set()
    for route in documented_routes(app):
        assert route.resource is not None
        path = route.resource.canonical
        handler = route.handler
        declared: Endpoint | None = getattr(handler, "endpoint", None)
        name = getattr(handler, "__name__", "operation")
        operation_id = name
        if operation_id in used_ids:
            module = getattr(handler, "__module__", "").rsplit(".", 1)[-1]
            operation_id = f"{module}_{name}"
        used_ids.add(operation_id)
        operation = operation_of(route.method, path, handler, declared, operation_id)
        tags.extend(tag for tag in operation.get("tags", []) if tag not in tags)
        paths.setdefault(path, {})[route.method.lower()] = operation
    order = list(TAGS)
    for tag in sorted(tags, key=lambda t: order.index(t) if t in order else len(order)):
        spec.tag({"name": tag, "description": TAGS[tag]} if tag in TAGS else {"name": tag})
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


async def document_ctx(app: web.Application) -> AsyncIterator[None]:
    """Build the document once, when the app starts (its router is complete by then)."""
    app[OPENAPI_DOCUMENT] = json.dumps(build_document(app), separators=(",", ":")).encode()
    yield


@routes.get("/openapi.json")
@endpoint(
    "This API's OpenAPI 3 document",
    roles=PUBLIC,
    tag="documentation",
    description="Generated from the same declarations the handlers validate with.",
)
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_DOCUMENT], content_type="application/json")


# -- /docs: Swagger UI, served from the swagger-ui-bundle package (no CDN) ----------------

_STATIC = resources.files("eventbook") / "static"
_SWAGGER_UI = Path(str(swagger_ui_bundle.swagger_ui_path))
_ASSET_HEADERS = {"Cache-Control": "public, max-age=86400"}


@routes.get("/docs")
@endpoint(
    "Read this API's document in a browser",
    roles=PUBLIC,
    tag="documentation",
    media_type="text/html",
    description="Swagger UI, with every asset served by this server.",
)
async def docs(request: web.Request) -> web.Response:
    return web.Response(
        text=(_STATIC / "docs.html").read_text(encoding="utf-8"), content_type="text/html"
    )


def _asset(path: Path, media_type: str) -> web.FileResponse:
    return web.FileResponse(path, headers={**_ASSET_HEADERS, "Content-Type": media_type})


@routes.get("/docs/swagger-ui.css")
@endpoint("The /docs page's style sheet", roles=PUBLIC, tag="documentation", media_type="text/css")
async def docs_css(request: web.Request) -> web.StreamResponse:
    return _asset(_SWAGGER_UI / "swagger-ui.css", "text/css")


@routes.get("/docs/swagger-ui-bundle.js")
@endpoint(
    "The /docs page's Swagger UI script", roles=PUBLIC, tag="documentation",
    media_type="text/javascript",
)
async def docs_bundle(request: web.Request) -> web.StreamResponse:
    return _asset(_SWAGGER_UI / "swagger-ui-bundle.js", "text/javascript")


@routes.get("/docs/docs.js")
@endpoint(
    "The /docs page's start-up script", roles=PUBLIC, tag="documentation",
    media_type="text/javascript",
)
async def docs_init(request: web.Request) -> web.StreamResponse:
    return _asset(Path(str(_STATIC / "docs.js")), "text/javascript")
