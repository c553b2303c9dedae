"""`eventbook queues` and `eventbook dlq` against real Redis and PostgreSQL."""

from __future__ import annotations

import argparse
import json

import asyncpg
import pytest
import redis.asyncio

from eventbook.actors.stream import dead_letter_key
from eventbook.cli import build_parser
from eventbook.config import Config
from eventbook.embedded import free_port
from tests.client import Api, eventually
from tests.processes import environment, run
from tests.seed import insert_webhook_deliveries, insert_webhook_endpoint


def eventbook_json(config: Config, *args: str) -> object:
    result = run([*args, "--json"], environment(config))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def dead_lettered_booking(make_api, pool: asyncpg.Pool) -> tuple[Api, str]:
    """A booking whose confirmation failed every attempt and went to the dead letters."""
    failing = await make_api(actors=True, mail_failure_rate=1.0, max_attempts=2)
    organizer = await failing.register(role="organizer")
    customer = await failing.register()
    event = await failing.create_event(organizer)
    booking = await (await failing.book(customer, event)).json()

    async def failed() -> bool:
        status = await pool.fetchval(
            "SELECT confirmation_status FROM bookings WHERE id = $1::uuid", booking["id"]
        )
        return status == "failed"

    await eventually(failed, timeout=60)
    await failing.client.close()
    return failing, booking["id"]


async def test_queues_reports_streams_groups_and_the_outbox(
    make_api, config: Config, pool: asyncpg.Pool
) -> None:
    await dead_lettered_booking(make_api, pool)
    await pool.execute(
        "INSERT INTO outbox (topic, kind, payload) VALUES ('confirmations', 'x', '{}')"
    )
    report = eventbook_json(config, "queues")
    rows = {(row["stream"], row["group"]): row for row in report["streams"]}
    confirmations = rows[("confirmations", "confirmations")]
    assert confirmations["dead_letters"] == 1
    assert confirmations["pending"] == 0
    assert report["outbox"]["backlog"] == 1

    text = run(["queues"], environment(config))
    assert text.returncode == 0
    assert "confirmations" in text.stdout and "outbox: 1 row(s) waiting" in text.stdout


async def test_queues_reports_webhook_deliveries_and_paused_endpoints(
    config: Config, pool: asyncpg.Pool
) -> None:
    """Pending deliveries, those due now of enabled endpoints (not those of a paused one,
    nor those due later) with the age of the oldest, those given up on, and the
    endpoints paused by reason; the succeeded ones are done with."""
    enabled = await insert_webhook_endpoint(pool)
    await insert_webhook_deliveries(pool, enabled, 2, due_seconds_ago=90)
    await insert_webhook_deliveries(pool, enabled, 1, due_seconds_ago=-600)
    await insert_webhook_deliveries(pool, enabled, 3, status="failed")
    await insert_webhook_deliveries(pool, enabled, 5, status="succeeded")
    failing = await insert_webhook_endpoint(pool, status="paused", paused_reason="failing")
    await insert_webhook_deliveries(pool, failing, 4, due_seconds_ago=3600)
    await insert_webhook_endpoint(pool, status="paused", paused_reason="owner")
    await insert_webhook_endpoint(pool, status="paused", paused_reason="owner")

    report = eventbook_json(config, "queues")
    assert "webhooks" in {row["stream"] for row in report["streams"]}
    webhooks = report["webhooks"]
    assert (webhooks["pending"], webhooks["due"], webhooks["failed"]) == (7, 2, 3)
    assert 90 <= webhooks["oldest_due_age_s"] < 150
    assert webhooks["endpoints_paused"] == {"owner": 2, "failing": 1}

    text = run(["queues"], environment(config))
    assert text.returncode == 0
    assert "webhook deliveries: 7 pending, 2 due" in text.stdout
    assert "3 failed; endpoints paused: 1 failing, 2 by owner" in text.stdout


async def test_a_replayed_dead_letter_is_handled_and_leaves_the_dead_letters(
    make_api, config: Config, pool: asyncpg.Pool
) -> None:
    _, booking_id = await dead_lettered_booking(make_api, pool)
    [letter] = eventbook_json(config, "dlq", "list")
    assert letter["kind"] == "booking_confirmed"
    assert letter["attempts"] == "2"
    assert "refused" in letter["error"]
    shown = eventbook_json(config, "dlq", "show", letter["id"])
    assert shown["payload"] == letter["payload"]

    replayed = eventbook_json(config, "dlq", "replay", letter["id"])
    assert [item["id"] for item in replayed] == [letter["id"]]
    assert eventbook_json(config, "dlq", "list") == []

    await make_api(actors=True)  # the mail server works again

    async def confirmed() -> bool:
        status = await pool.fetchval(
            "SELECT confirmation_status FROM bookings WHERE id = $1::uuid", booking_id
        )
        return status == "sent"

    await eventually(confirmed, timeout=60)
    sent = await pool.fetchval(
        "SELECT count(*) FROM notifications WHERE booking_id = $1::uuid AND sent_at IS NOT NULL",
        booking_id,
    )
    assert sent == 1


async def test_purge_asks_first_and_deletes_with_yes(config: Config) -> None:
    client = redis.asyncio.Redis.from_url(config.redis_url, decode_responses=True)
    key = dead_letter_key(config.redis_prefix, "confirmations")
    await client.xadd(key, {"kind": "booking_confirmed", "payload": "{}", "error": "boom"})
    try:
        refused = run(["dlq", "purge"], environment(config), input="")
        assert refused.returncode == 2
        assert await client.xlen(key) == 1
        assert eventbook_json(config, "dlq", "purge", "--yes") == {"purged": 1}
        assert await client.xlen(key) == 0
    finally:
        await client.aclose()


def test_replay_needs_ids_or_all(config: Config) -> None:
    result = run(["dlq", "replay"], environment(config))
    assert result.returncode == 2
    assert "--all" in result.stderr


# -- output: the answer on stdout, logs on stderr ----------------------------------------


def leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict:
    """Every runnable subcommand of the parser, by its words (("dlq", "list"), ...)."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= leaf_commands(sub, (*path, name))
    return found or {path: parser}


def test_every_operator_command_takes_json_and_only_serve_and_worker_log_to_stdout() -> None:
    commands = leaf_commands(build_parser())
    processes = {words for words, parser in commands.items()
                 if parser.get_default("logs_to_stdout")}
    assert processes == {("serve",), ("worker",)}
    without_json = [" ".join(words) for words, parser in commands.items()
                    if words not in processes
                    and "--json" not in parser._option_string_actions]
    assert without_json == []


@pytest.mark.parametrize(
    "args", [["migrate"], ["queues"], ["check"], ["dlq", "list"]], ids=" ".join
)
def test_json_answers_are_the_whole_of_stdout_and_logs_go_to_stderr(
    config: Config, args: list[str]
) -> None:
    result = run([*args, "--json"], environment(config))
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)
    if args == ["migrate"]:
        assert "migrations_done" in result.stderr


def test_user_create_answers_json(config: Config) -> None:
    result = run(
        ["user", "create", "--role", "customer", "--email", "json@example.com",
         "--name", "J", "--json"],
        environment(config), input="a long password\n",
    )
    assert result.returncode == 0, result.stderr
    user = json.loads(result.stdout)
    assert (user["email"], user["role"]) == ("json@example.com", "customer")


# -- errors: one line naming what to do ----------------------------------------------------


def closed_port_environment(config: Config, service: str) -> dict[str, str]:
    port = free_port()  # bound and released: nothing listens there
    if service == "postgres":
        return environment(config, DATABASE_URL=f"postgresql://app:hunter2@127.0.0.1:{port}/x")
    return environment(config, REDIS_URL=f"redis://127.0.0.1:{port}/0")


@pytest.mark.parametrize(
    ("args", "service", "variable"),
    [
        (["migrate"], "postgres", "DATABASE_URL"),
        (["check"], "postgres", "DATABASE_URL"),
        (["queues"], "postgres", "DATABASE_URL"),
        (["queues"], "redis", "REDIS_URL"),
        (["dlq", "list"], "redis", "REDIS_URL"),
        (["serve", "--port", "0"], "postgres", "DATABASE_URL"),
        (["worker"], "postgres", "DATABASE_URL"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else value,
)
def test_an_unreachable_server_is_one_line_naming_its_variable(
    config: Config, args: list[str], service: str, variable: str
) -> None:
    result = run(args, closed_port_environment(config, service))
    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    what = "PostgreSQL" if service == "postgres" else "Redis"
    assert line.startswith(f"eventbook: cannot reach {what} at ")
    assert variable in line and "hunter2" not in line
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "args",
    [["dlq", "show", "hello"], ["dlq", "show", "1-99999999999999999999"],
     ["dlq", "replay", "1764000000000-0", "nope"]],
    ids=" ".join,
)
def test_a_malformed_dead_letter_id_is_one_line(config: Config, args: list[str]) -> None:
    result = run(args, environment(config))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"eventbook: {args[-1]!r} is not a dead-letter id: ids look like 1764000000000-0 "
        "(`eventbook dlq list` shows them)"
    ]


def test_an_unknown_dead_letter_is_one_line(config: Config) -> None:
    result = run(["dlq", "show", "1-0"], environment(config))
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "eventbook: no dead letter 1-0 (`eventbook dlq list` shows them)"
    )


@pytest.mark.parametrize(
    ("email", "password", "message"),
    [
        ("x@example.com", "short\n", "password: Length must be between 8 and 1024."),
        ("not an address", "a long password\n", "--email: Not a valid email address."),
        ("x@example.com", "", "no password on standard input: give it as the first line"),
        ("x@example.com", "\n", "no password on standard input: give it as the first line"),
    ],
)
def test_user_create_explains_bad_input_in_one_line(
    config: Config, email: str, password: str, message: str
) -> None:
    result = run(
        ["user", "create", "--role", "organizer", "--email", email, "--name", "X"],
        environment(config), input=password,
    )
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"eventbook: {message}")
    assert "{" not in line


def test_user_create_names_a_taken_email_in_one_line(config: Config) -> None:
    args = ["user", "create", "--role", "customer", "--email", "twice@example.com",
            "--name", "T"]
    assert run(args, environment(config), input="a long password\n").returncode == 0
    again = run(args, environment(config), input="a long password\n")
    assert again.returncode == 1
    assert again.stderr.splitlines()[-1] == "eventbook: An account with this e-mail exists."
    assert "Traceback" not in again.stderr
