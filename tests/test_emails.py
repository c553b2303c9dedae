"""E-mail addresses: one key, made in one place (eventbook.emails), decides both that an
address is taken and which account a log-in is for."""

from __future__ import annotations

from typing import Any

from tests.assertions import assert_problem
from tests.client import Api, expect


async def sign_up(api: Api, email: str) -> Any:
    return await api.post(
        "/api/v1/auth/register",
        json={"email": email, "password": "correct horse", "name": "N", "role": "customer"},
    )


async def test_an_address_with_a_capital_umlaut_logs_in_as_typed(api: Api) -> None:
    user = await api.register(email="Äbc@example.com")
    for typed in ("Äbc@example.com", "äbc@example.com", " ÄBC@EXAMPLE.COM "):
        body = await expect(await api.login(typed, user.password), 200)
        assert body["user"]["id"] == user.id
    me = await expect(await api.get("/api/v1/me", user), 200)
    assert me["email"] == "Äbc@example.com"


async def test_an_address_in_another_case_or_unicode_form_is_taken(api: Api) -> None:
    await api.register(email="Äbc@example.com")
    await api.register(email="straße@example.com")
    for other in (
        "äbc@example.com",
        "A\u0308bc@example.com",  # A and a combining diaeresis
        "ÄBC@Example.COM",
        "Äbc@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com",  # fullwidth "example"
        "STRASSE@example.com",
    ):
        await assert_problem(await sign_up(api, other), 409, "email_taken")


async def test_the_domain_is_compared_in_its_idna_form(api: Api) -> None:
    user = await api.register(email="anna@Bücher.example")
    await assert_problem(await sign_up(api, "anna@xn--bcher-kva.example"), 409, "email_taken")
    body = await expect(await api.login("ANNA@XN--BCHER-KVA.example", user.password), 200)
    assert body["user"]["id"] == user.id


async def test_a_domain_that_is_not_a_valid_idna_name_is_a_422(api: Api) -> None:
    for email in (
        "a@exa\ud800mple.com",  # a lone surrogate
        "a@\u2603.example",  # a snowman: IDNA 2003 allowed it, IDNA 2008 does not
        "a@xn--zz.example",  # not valid Punycode
        "a@[192.0.2.1]",
    ):
        body = await assert_problem(await sign_up(api, email), 422, "validation_failed")
        assert "email" in body["errors"], email
