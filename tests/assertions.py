"""Assertions several test modules share about the contract's answers."""

from __future__ import annotations

from typing import Any

from aiohttp import ClientResponse

PROBLEM_KEYS = {"type", "title", "status", "detail", "code", "request_id"}


async def assert_problem(answer: ClientResponse, status: int, code: str) -> dict[str, Any]:
    """The answer is an RFC 9457 problem with `status` and `code` that carries the
    request's id; its body."""
    assert answer.status == status, await answer.text()
    assert answer.content_type == "application/problem+json"
    body: dict[str, Any] = await answer.json()
    assert PROBLEM_KEYS <= body.keys()
    assert body["status"] == status
    assert body["code"] == code
    assert body["request_id"] == answer.headers["X-Request-ID"]
    return body
