"""What the logs never carry: passwords, password hashes, request bodies, frame locals."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import asyncpg
import pytest

from eventbook.accounts import create_user
from eventbook.auth import Passwords
from eventbook.config import Config
from tests.processes import Server, environment

PASSWORD = "a secret no log line may show"


@pytest.mark.parametrize("log_format", ["json", "console"])
async def test_a_500_while_signing_up_or_logging_in_logs_no_password_and_no_hash(
    config: Config, pool: asyncpg.Pool, tmp_path: Path, log_format: str
) -> None:
    # A user whose hash was made with a lower Argon2 cost than the server's, so logging in
    # writes a new hash. The constraint makes that write fail, and every sign-up's insert
    # too: both requests end in an unexpected error after the password was read and
    # hashed, with both in the handlers' local variables.
    passwords = Passwords(config)
    try:
        old_hash = await passwords.hash(PASSWORD)
    finally:
        passwords.close()
    await create_user(pool, "victim@example.com", old_hash, "Victim", "customer")
    await pool.execute(
        "ALTER TABLE users ADD CONSTRAINT refuse_new_hashes"
        " CHECK (password_hash NOT LIKE '%,t=2,%') NOT VALID"
    )
    env = environment(config, EVENTBOOK_ARGON2_TIME_COST="2", EVENTBOOK_LOG_FORMAT=log_format)
    server = Server(env, tmp_path / "server.log", "--no-actors")
    try:
        await server.wait_ready()
        async with aiohttp.ClientSession(server.url) as session:
            for path, body in (
                ("/api/v1/auth/register", {"email": "new@example.com", "password": PASSWORD,
                                           "name": "New", "role": "customer"}),
                ("/api/v1/auth/login", {"email": "victim@example.com", "password": PASSWORD}),
            ):
                async with session.post(path, json=body) as answer:
                    assert answer.status == 500, await answer.text()
                    assert (await answer.json())["code"] == "internal_error"
    finally:
        server.stop()

    log = server.output
    assert log.count("unhandled_error") == 2, log
    assert "CheckViolationError" in log
    assert PASSWORD not in log
    assert "$argon2id$" not in log
    salt, digest = old_hash.split("$")[-2:]
    assert salt not in log and digest not in log
