"""Every error is RFC 9457 problem+json with a stable code and the request id."""

from __future__ import annotations

from eventbook.app import create_app
from tests.assertions import assert_problem
from tests.client import Api


async def test_unknown_route_is_a_404_problem(api: Api) -> None:
    await assert_problem(await api.get("/no/such/thing"), 404, "not_found")


async def test_wrong_method_is_a_405_problem_with_allow(api: Api) -> None:
    answer = await api.request("DELETE", "/api/v1/auth/login")
    await assert_problem(answer, 405, "method_not_allowed")
    assert "POST" in answer.headers["Allow"]


async def test_malformed_json_is_a_400_problem(api: Api) -> None:
    answer = await api.post(
        "/api/v1/auth/login", data=b'{"email": ', headers={"Content-Type": "application/json"}
    )
    await assert_problem(answer, 400, "malformed_json")


async def test_a_body_that_is_not_json_is_a_415_problem(api: Api) -> None:
    answer = await api.post(
        "/api/v1/auth/login", data=b"email=a", headers={"Content-Type": "text/plain"}
    )
    await assert_problem(answer, 415, "unsupported_media_type")


async def test_an_oversized_body_is_a_413_problem(make_api) -> None:
    api = await make_api(max_body_bytes=2048)
    answer = await api.post(
        "/api/v1/auth/login", data=b'{"email": "' + b"a" * 5000 + b'"}',
        headers={"Content-Type": "application/json"},
    )
    await assert_problem(answer, 413, "body_too_large")


async def test_validation_errors_name_each_field(api: Api) -> None:
    answer = await api.post(
        "/api/v1/auth/register", json={"email": "nope", "password": "x", "role": "x", "extra": 1}
    )
    body = await assert_problem(answer, 422, "validation_failed")
    assert set(body["errors"]) == {"email", "password", "name", "role", "extra"}


async def test_a_json_array_body_is_a_422_problem(api: Api) -> None:
    answer = await api.post("/api/v1/auth/login", json=[1, 2])
    await assert_problem(answer, 422, "validation_failed")


async def test_a_sane_incoming_request_id_is_kept(api: Api) -> None:
    answer = await api.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert answer.headers["X-Request-ID"] == "abc-123"


async def test_an_unsafe_incoming_request_id_is_replaced(api: Api) -> None:
    answer = await api.get("/healthz", headers={"X-Request-ID": "bad id\twith <junk>"})
    assert answer.headers["X-Request-ID"] != "bad id\twith <junk>"
    assert len(answer.headers["X-Request-ID"]) == 32


async def test_an_unexpected_error_is_a_500_that_leaks_nothing(config, aiohttp_client) -> None:
    async def explode(request):
        raise RuntimeError("secret internals")

    app = create_app(config, actors=False)
    app.router.add_get("/test/explode", explode)
    api = Api(await aiohttp_client(app))
    answer = await api.get("/test/explode")
    await assert_problem(answer, 500, "internal_error")
    assert "secret" not in await answer.text()


async def test_no_answer_names_the_server_software(api: Api) -> None:
    """aiohttp's default Server header names the Python and aiohttp versions."""
    for path in ("/healthz", "/openapi.json", "/docs", "/no/such/thing"):
        answer = await api.get(path)
        assert "Server" not in answer.headers, (path, answer.headers["Server"])
    answer = await api.post("/api/v1/auth/login", data=b"{", headers={
        "Content-Type": "application/json"})
    await assert_problem(answer, 400, "malformed_json")
    assert "Server" not in answer.headers
