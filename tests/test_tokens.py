"""Every bad token is a 401 with WWW-Authenticate: Bearer; the wrong role is a 403."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest

from eventbook.keys import TOKENS
from tests.assertions import assert_problem
from tests.client import Api

SECRET = "test-secret-" + "x" * 40


def claims(user_id: str, role: str = "customer", **overrides) -> dict:
    now = int(time.time())
    base = {
        "sub": user_id, "role": role, "iat": now, "exp": now + 600,
        "iss": "eventbook", "aud": "eventbook-api", "jti": uuid.uuid4().hex,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


async def refused(api: Api, token: str) -> dict:
    answer = await api.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    body = await assert_problem(answer, 401, "invalid_token")
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    return body


async def test_a_valid_token_is_accepted(api: Api, customer) -> None:
    token = jwt.encode(claims(customer.id), SECRET, algorithm="HS256")
    answer = await api.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert answer.status == 200


async def test_no_token_is_a_401_with_the_bearer_challenge(api: Api) -> None:
    answer = await api.get("/api/v1/me")
    await assert_problem(answer, 401, "unauthorized")
    assert answer.headers["WWW-Authenticate"] == "Bearer"


async def test_another_scheme_is_a_401(api: Api) -> None:
    answer = await api.get("/api/v1/me", headers={"Authorization": "Basic YTpi"})
    await assert_problem(answer, 401, "unauthorized")


async def test_two_authorization_headers_are_a_400(api: Api, customer) -> None:
    """Which of two tokens a request acts for is not for the server to guess, even when
    both are valid and the same."""
    for second in (customer.token, "not.a.token"):
        answer = await api.get("/api/v1/me", headers=[
            ("Authorization", f"Bearer {customer.token}"), ("Authorization", f"Bearer {second}"),
        ])
        await assert_problem(answer, 400, "repeated_header")


async def test_a_garbage_token_is_a_401(api: Api) -> None:
    await refused(api, "not.a.token")


async def test_a_forged_role_claim_is_a_401(api: Api, customer) -> None:
    header, _, signature = customer.token.split(".")
    forged = jwt.encode(claims(customer.id, role="organizer"), "another secret" * 4,
                        algorithm="HS256").split(".")[1]
    await refused(api, f"{header}.{forged}.{signature}")


async def test_alg_none_is_a_401(api: Api, customer) -> None:
    token = jwt.encode(claims(customer.id), None, algorithm="none")
    await refused(api, token)


async def test_another_algorithm_is_a_401(api: Api, customer) -> None:
    token = jwt.encode(claims(customer.id), SECRET * 2, algorithm="HS512")
    await refused(api, token)


async def test_a_token_signed_with_another_secret_is_a_401(api: Api, customer) -> None:
    token = jwt.encode(claims(customer.id), "a different secret that is long enough", "HS256")
    await refused(api, token)


async def test_an_expired_token_is_a_401(api: Api, customer) -> None:
    past = int(time.time()) - 3600
    token = jwt.encode(claims(customer.id, iat=past - 60, exp=past), SECRET, algorithm="HS256")
    body = await refused(api, token)
    assert "expired" in body["detail"]


async def test_a_wrong_audience_is_a_401(api: Api, customer) -> None:
    token = jwt.encode(claims(customer.id, aud="someone-else"), SECRET, algorithm="HS256")
    await refused(api, token)


async def test_a_wrong_issuer_is_a_401(api: Api, customer) -> None:
    token = jwt.encode(claims(customer.id, iss="mallory"), SECRET, algorithm="HS256")
    await refused(api, token)


@pytest.mark.parametrize("missing", ["sub", "role", "iat", "exp", "iss", "aud", "jti"])
async def test_a_token_missing_a_claim_is_a_401(api: Api, customer, missing: str) -> None:
    token = jwt.encode(claims(customer.id, **{missing: None}), SECRET, algorithm="HS256")
    await refused(api, token)


async def test_an_unknown_role_claim_is_a_401(api: Api, customer) -> None:
    token = jwt.encode(claims(customer.id, role="admin"), SECRET, algorithm="HS256")
    await refused(api, token)


async def test_the_wrong_role_is_a_403(api: Api, customer) -> None:
    answer = await api.post(
        "/api/v1/events", customer,
        json={"title": "Mine", "starts_at": "2099-01-01T10:00:00+00:00", "capacity": 5},
    )
    await assert_problem(answer, 403, "forbidden_role")


async def test_tokens_carry_every_claim(api: Api, customer) -> None:
    decoded = jwt.decode(customer.token, options={"verify_signature": False})
    assert set(decoded) == {"sub", "role", "iat", "exp", "iss", "aud", "jti"}
    assert api.app[TOKENS].decode(customer.token).role == "customer"
