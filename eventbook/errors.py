"""RFC 9457 problem details: one exception type, one middleware."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import marshmallow
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from eventbook.keys import REQUEST_ID
from eventbook.outages import is_outage

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"

# aiohttp's own HTTP errors (unknown route, 405, 413, ...) get these stable codes.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    413: "body_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "too_many_requests",
    431: "headers_too_large",
    500: "internal_error",
    503: "service_unavailable",
}


class Problem(Exception):
    """An error answer: raise it anywhere in a request to send problem+json."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers or {}
        self.extra = extra

    def body(self, request_id: str | None) -> dict[str, Any]:
        return {
            "type": f"urn:eventbook:problem:{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            "request_id": request_id,
            **self.extra,
        }


def validation_problem(errors: Any, detail: str = "The request is not valid.") -> Problem:
    """422 with marshmallow's field -> messages map."""
    return Problem(422, "validation_failed", detail, errors=errors)


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What one outcome code of a stored procedure means outside SQL.

    Each resource keeps one table from its procedures' codes to these, so a code is
    translated in one place: the status of the answer when it succeeds, the Problem it
    answers when it refuses (built from the procedure's result), and its label on a
    counter, if it is counted.
    """

    status: int = 200
    refusal: Callable[..., Problem] | None = None
    metric: str | None = None

    def check(self, *result: Any) -> None:
        """Raise this outcome's Problem if it is a refusal."""
        if self.refusal is not None:
            raise self.refusal(*result)


def problem_response(problem: Problem, request_id: str | None) -> web.Response:
    return web.Response(
        status=problem.status,
        text=json.dumps(problem.body(request_id)),
        content_type=PROBLEM_JSON,
        headers=problem.headers,
    )


def _from_http_exception(exc: web.HTTPException) -> Problem:
    headers: dict[str, str] = {}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        detail = f"{exc.method} is not allowed here; use {headers['Allow']}."
    elif isinstance(exc, web.HTTPNotFound):
        detail = "There is nothing at this address."
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        detail = "The request body is too large."
    else:
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
    return Problem(exc.status, _HTTP_CODES.get(exc.status, "http_error"), detail, headers=headers)


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into problem+json; log unexpected ones once, with traceback."""
    request_id = request.get(REQUEST_ID)
    try:
        return await handler(request)
    except Problem as problem:
        return problem_response(problem, request_id)
    except marshmallow.ValidationError as exc:
        messages = exc.normalized_messages()  # type: ignore[no-untyped-call]
        return problem_response(validation_problem(messages), request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem_response(_from_http_exception(exc), request_id)
    except Exception as exc:
        if is_outage(exc):
            log.warning("dependency_unavailable", error=repr(exc))
            unavailable = Problem(
                503, "service_unavailable",
                "A service this request needs is unavailable; retry.",
                headers={"Retry-After": "1"},
            )
            return problem_response(unavailable, request_id)
        log.exception("unhandled_error", method=request.method, path=request.path)
        internal = Problem(500, "internal_error", "Something went wrong on our side.")
        return problem_response(internal, request_id)
