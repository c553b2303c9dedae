"""E-mail addresses: one key, made in one place (eventbook.emails), decides both that an
address is taken and which account a log-in is for."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from eventbook import db
from eventbook.app import create_app
from eventbook.auth import Passwords
from eventbook.check import consistency_report
from tests.client import Api, expect
from tests.conftest import Servers, base_config, with_database
from tests.test_problems import assert_problem


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


async def migrate_until(conn: asyncpg.Connection, first_pending: str) -> None:
    """Apply the migrations before `first_pending`, as an older eventbook did."""
    await conn.execute(
        "CREATE TABLE schema_migrations ("
        " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    for name, sql in db.migrations():
        if name >= first_pending:
            break
        await conn.execute(sql)
        await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)


async def test_users_from_before_the_key_log_in_after_the_migration(
    servers: Servers, aiohttp_client: Any
) -> None:
    name = f"test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(servers.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        config = base_config(with_database(servers.database_url, name), servers.redis_url)
        passwords = Passwords(config)
        try:
            password_hash = await passwords.hash("correct horse")
        finally:
            passwords.close()
        conn = await asyncpg.connect(config.database_url)
        try:
            await migrate_until(conn, "0012_email_key")
            # As the old code registered them: the address as typed, unique by lower(email),
            # which folds ASCII only. Ärger could never log in (log-in folded the Ä in
            # Python); ärger, a second account for the same address, could.
            ids = {}
            for minutes_ago, email in enumerate(
                reversed(["Bob@Example.com", "Äbc@example.com", "Ärger@example.com",
                          "ärger@example.com"])
            ):
                ids[email] = await conn.fetchval(
                    "INSERT INTO users (email, name, role, password_hash, created_at)"
                    " VALUES ($1, 'Old', 'customer', $2, now() - make_interval(mins => $3))"
                    " RETURNING id::text",
                    email, password_hash, minutes_ago,
                )
            assert "0012_email_key" in await db.migrate(conn)
            report = await consistency_report(conn, 60, 600)
        finally:
            await conn.close()

        api = Api(await aiohttp_client(create_app(config, actors=False)))
        for typed, owner in (
            ("bob@example.com", "Bob@Example.com"),
            ("ÄBC@example.com", "Äbc@example.com"),
            ("Ärger@example.com", "ärger@example.com"),
        ):
            body = await expect(await api.login(typed, "correct horse"), 200)
            assert body["user"]["id"] == ids[owner], typed
        # The other account for ärger's address keeps its data; `eventbook check` names it.
        assert [str(row["id"]) for row in report["users_without_email_key"]] == [
            ids["Ärger@example.com"]
        ]
        await assert_problem(await sign_up(api, "ÄRGER@example.com"), 409, "email_taken")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
