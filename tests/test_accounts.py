"""Register, log in, who am I; passwords and the login rate limit."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

import pytest

from eventbook.keys import PASSWORDS
from tests.assertions import assert_problem
from tests.client import Api
from tests.processes import environment, run


async def test_register_answers_the_user_and_a_bearer_token(api: Api) -> None:
    answer = await api.post(
        "/api/v1/auth/register",
        json={"email": "Ada@Example.com", "password": "long enough", "name": "Ada",
              "role": "organizer"},
    )
    assert answer.status == 201
    body = await answer.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["user"]["email"] == "Ada@Example.com"
    assert body["user"]["role"] == "organizer"
    assert set(body["user"]) == {"id", "email", "name", "role", "created_at"}
    assert "+00:00" in body["user"]["created_at"]


async def test_me_answers_the_signed_in_user(api: Api, customer) -> None:
    answer = await api.get("/api/v1/me", customer)
    assert answer.status == 200
    body = await answer.json()
    assert body["id"] == customer.id
    assert body["role"] == "customer"
    assert "password_hash" not in body


async def test_the_same_email_in_other_letter_case_is_taken(api: Api, customer) -> None:
    answer = await api.post(
        "/api/v1/auth/register",
        json={"email": customer.email.upper(), "password": "long enough", "name": "B",
              "role": "customer"},
    )
    await assert_problem(answer, 409, "email_taken")


async def test_a_password_under_eight_characters_is_refused(api: Api) -> None:
    answer = await api.post(
        "/api/v1/auth/register",
        json={"email": "short@example.com", "password": "1234567", "name": "S",
              "role": "customer"},
    )
    body = await assert_problem(answer, 422, "validation_failed")
    assert "password" in body["errors"]


async def test_an_unknown_role_is_refused(api: Api) -> None:
    answer = await api.post(
        "/api/v1/auth/register",
        json={"email": "admin@example.com", "password": "long enough", "name": "S",
              "role": "admin"},
    )
    body = await assert_problem(answer, 422, "validation_failed")
    assert "role" in body["errors"]


async def test_login_with_the_right_password_in_any_email_case(api: Api, customer) -> None:
    answer = await api.login(customer.email.upper(), customer.password)
    assert answer.status == 200
    body = await answer.json()
    assert body["user"]["id"] == customer.id
    me = await api.get("/api/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status == 200


async def test_wrong_password_and_unknown_email_get_the_same_answer(api: Api, customer) -> None:
    wrong = await api.login(customer.email, "not the password")
    unknown = await api.login("nobody@example.com", "not the password")
    wrong_body = await assert_problem(wrong, 401, "invalid_credentials")
    unknown_body = await assert_problem(unknown, 401, "invalid_credentials")
    assert wrong_body["detail"] == unknown_body["detail"]


async def test_unknown_email_takes_about_as_long_as_a_wrong_password(
    make_api, config
) -> None:
    # Real Argon2 cost here, so the difference would show if the hash were skipped.
    api = await make_api(argon2_time_cost=2, argon2_memory_kib=32768)
    user = await api.register()

    async def timed(email: str) -> float:
        started = time.perf_counter()
        await api.login(email, "not the password")
        return time.perf_counter() - started

    await timed("warm-up@example.com")
    known = min([await timed(user.email) for _ in range(3)])
    unknown = min([await timed("nobody@example.com") for _ in range(3)])
    assert unknown > known * 0.5, (known, unknown)


async def test_login_is_rate_limited_per_email(make_api) -> None:
    api = await make_api(login_limit=3, login_window_seconds=60)
    user = await api.register()
    for _ in range(3):
        assert (await api.login(user.email, "wrong password")).status == 401
    answer = await api.login(user.email, user.password)
    await assert_problem(answer, 429, "too_many_requests")
    assert 1 <= int(answer.headers["Retry-After"]) <= 60


async def test_login_is_rate_limited_per_client_address(make_api) -> None:
    api = await make_api(login_ip_limit=4, login_window_seconds=60)
    for n in range(4):
        assert (await api.login(f"someone{n}@example.com", "wrong password")).status == 401
    answer = await api.login("another@example.com", "wrong password")
    await assert_problem(answer, 429, "too_many_requests")
    assert int(answer.headers["Retry-After"]) >= 1


async def test_sign_ups_are_rate_limited_per_client_address(make_api) -> None:
    api = await make_api(signup_ip_limit=3, signup_window_seconds=60)
    for _ in range(3):
        await api.register()
    answer = await api.post("/api/v1/auth/register", json=sign_up_body())
    await assert_problem(answer, 429, "too_many_requests")
    assert 1 <= int(answer.headers["Retry-After"]) <= 60


def sign_up_body() -> dict[str, str]:
    return {"email": f"burst-{uuid.uuid4().hex[:12]}@example.com", "password": "long enough",
            "name": "Burst", "role": "customer"}


# Real Argon2 cost, so that a hash takes far longer than answering a request.
COSTLY_HASHES = {"argon2_time_cost": 2, "argon2_memory_kib": 32768, "hash_threads": 1}


async def test_a_log_in_is_answered_while_a_burst_of_sign_ups_waits_for_hashing(
    make_api,
) -> None:
    api = await make_api(**COSTLY_HASHES)
    user = await api.register()
    signups = [
        asyncio.create_task(api.post("/api/v1/auth/register", json=sign_up_body()))
        for _ in range(16)
    ]
    # Once one sign-up is answered, the others have long been waiting for a hash.
    await next(asyncio.as_completed(signups))
    answer = await api.login(user.email, user.password)
    answered = sum(task.done() for task in signups)
    assert answer.status == 200, await answer.text()
    # In a pool shared with the sign-ups the log-in's hash would wait behind most of them;
    # in its own lane it runs beside the one sign-up hash in progress.
    assert answered < len(signups) // 2, answered
    assert [signup.status for signup in await asyncio.gather(*signups)] == [201] * 16


async def test_sign_ups_beyond_the_hashing_queue_are_answered_503_at_once(
    make_api, pool
) -> None:
    api = await make_api(**COSTLY_HASHES, hash_queue=1)
    answers = []

    async def sign_up() -> None:
        answers.append(await api.post("/api/v1/auth/register", json=sign_up_body()))

    await asyncio.gather(*(sign_up() for _ in range(8)))
    # One sign-up hashing and one waiting fill the lane; the first answer is a refusal
    # that did not wait for either hash.
    busy = [answer for answer in answers if answer.status == 503]
    assert answers[0].status == 503
    for answer in busy:
        await assert_problem(answer, 503, "server_busy")
        assert answer.headers["Retry-After"] == "1"
    created = [answer for answer in answers if answer.status == 201]
    assert len(created) >= 2 and len(created) + len(busy) == 8
    assert await pool.fetchval("SELECT count(*) FROM users") == len(created)


async def test_a_successful_login_resets_the_email_counter(make_api) -> None:
    api = await make_api(login_limit=3, login_window_seconds=60)
    user = await api.register()
    for _ in range(2):
        await api.login(user.email, "wrong password")
    assert (await api.login(user.email, user.password)).status == 200
    for _ in range(2):
        assert (await api.login(user.email, "wrong password")).status == 401


async def test_organizer_signup_can_be_turned_off(make_api) -> None:
    api = await make_api(organizer_signup=False)
    answer = await api.post(
        "/api/v1/auth/register",
        json={"email": "org@example.com", "password": "long enough", "name": "O",
              "role": "organizer"},
    )
    await assert_problem(answer, 403, "organizer_signup_disabled")
    assert (await api.register(role="customer")).role == "customer"


async def test_login_rehashes_a_password_hashed_with_old_parameters(
    make_api, pool
) -> None:
    old = await make_api(argon2_time_cost=1)
    user = await old.register()
    before = await pool.fetchval("SELECT password_hash FROM users WHERE id = $1::uuid", user.id)
    new = await make_api(argon2_time_cost=2)
    assert (await new.login(user.email, user.password)).status == 200
    after = await pool.fetchval("SELECT password_hash FROM users WHERE id = $1::uuid", user.id)
    assert after != before
    assert ",t=2," in after
    assert (await new.login(user.email, user.password)).status == 200


async def test_the_event_loop_keeps_serving_while_hashes_are_computed(make_api) -> None:
    # Expensive hashes: were they computed on the loop, /healthz would wait behind them.
    api = await make_api(argon2_time_cost=4, argon2_memory_kib=65536)
    started = time.perf_counter()
    await api.app[PASSWORDS].hash("one hash, alone")
    one_hash = time.perf_counter() - started

    registrations = [asyncio.create_task(api.register()) for _ in range(4)]
    await asyncio.sleep(0.01)
    latencies = []
    while not all(task.done() for task in registrations):
        started = time.perf_counter()
        assert (await api.get("/healthz")).status == 200
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(0.005)
    await asyncio.gather(*registrations)
    # On the loop, every probe would wait out at least one whole hash.
    assert len(latencies) >= 3
    assert statistics.median(latencies) < one_hash / 2, (one_hash, latencies)


async def test_an_operator_creates_an_organizer_from_the_command_line(
    make_api, config
) -> None:
    api = await make_api(organizer_signup=False)
    result = run(
        ["user", "create", "--role", "organizer", "--email", "boss@example.com",
         "--name", "Boss"],
        environment(config), input="a long password\n",
    )
    assert result.returncode == 0, result.stderr
    assert "created organizer boss@example.com" in result.stdout
    answer = await api.login("boss@example.com", "a long password")
    assert answer.status == 200
    assert (await answer.json())["user"]["role"] == "organizer"


def test_user_create_refuses_a_short_password(config) -> None:
    result = run(
        ["user", "create", "--role", "organizer", "--email", "x@example.com", "--name", "X"],
        environment(config), input="short\n",
    )
    assert result.returncode == 2
    assert "password" in result.stderr


def test_user_create_takes_no_password_on_the_command_line(config) -> None:
    result = run(
        ["user", "create", "--role", "customer", "--email", "x@example.com", "--name", "X",
         "--password", "in argv"],
        environment(config), input="",
    )
    assert result.returncode == 2
    assert "unrecognized arguments: --password" in result.stderr


@pytest.mark.parametrize(
    "name", ["Ada\r\nBcc: x@example.com", "Ada\tL", "\u202eadA", "A\u2028B"]
)
async def test_a_name_with_control_characters_is_refused(api: Api, name: str) -> None:
    answer = await api.post(
        "/api/v1/auth/register",
        json={"email": "ada@example.com", "password": "correct horse", "name": name,
              "role": "customer"},
    )
    problem = await assert_problem(answer, 422, "validation_failed")
    assert set(problem["errors"]) == {"name"}
    assert "control characters" in problem["errors"]["name"][0]


async def test_text_the_database_cannot_store_is_a_422_not_a_500(api: Api) -> None:
    for body in (
        {"email": "a@example.com", "password": "correct horse", "name": "x\u0000y",
         "role": "customer"},
        {"email": "a@example.com", "password": "correct\ud800horse", "name": "X",
         "role": "customer"},
    ):
        await assert_problem(await api.post("/api/v1/auth/register", json=body), 422,
                             "validation_failed")
    for email, password in (("a\u0000", "correct horse"), ("a\ud800", "x"), ("a", "x\ud800")):
        await assert_problem(await api.login(email, password), 422, "validation_failed")
