"""The eventbook command: configuration, migrations, readiness, embedded servers, signals."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from eventbook import db
from eventbook.actors import ACTOR_NAMES
from eventbook.config import SETTINGS, Config, ConfigError
from eventbook.embedded import EmbeddedServices, free_port
from eventbook.keys import REDIS
from tests.assertions import assert_problem
from tests.client import Api, User
from tests.conftest import Servers, with_database
from tests.processes import Process, Server, environment, run

# -- configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "eighty"}, "PORT='eighty' is not valid: expected an integer from 1 to 65535"),
        ({"PORT": "70000"}, "PORT='70000' is not valid"),
        ({"JWT_SECRET": "short"}, "JWT_SECRET must be at least 32 bytes long"),
        ({"DATABASE_URL": "mysql://x/y", "JWT_SECRET": "s" * 32}, "DATABASE_URL='mysql://x/y'"),
        ({"DATABASE_URL": "postgresql://h/db"}, "JWT_SECRET is required when DATABASE_URL"),
        ({"EVENTBOOK_LOG_FORMAT": "xml"}, "expected auto | json | console"),
        ({"EVENTBOOK_MAIL_FAILURE_RATE": "2"}, "expected a number from 0 to 1"),
        ({"EVENTBOOK_DB_POOL_MIN": "30", "EVENTBOOK_DB_POOL_MAX": "10"}, "must not exceed"),
        ({"EVENTBOOK_ORGANIZER_SIGNUP": "maybe"}, "expected true or false"),
        ({"EVENTBOOK_PROCESSES": "0"}, "expected a number from 1 to 1024, or auto"),
        ({"EVENTBOOK_REDIS_CLUSTER": "perhaps"}, "expected true or false"),
        ({"EVENTBOOK_REDIS_PREFIX": "{app}:"}, "must not contain { or }"),
    ],
)
def test_a_bad_setting_is_refused_with_one_line_naming_it(env: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        Config.from_env(env)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_auto_processes_are_one_per_core_this_process_may_use() -> None:
    assert Config.from_env({"EVENTBOOK_PROCESSES": "auto"}).processes == len(
        os.sched_getaffinity(0)
    )
    assert Config.from_env({"EVENTBOOK_PROCESSES": "3"}).processes == 3
    assert Config.from_env({}).processes == 1


def test_defaults_need_no_environment() -> None:
    config = Config.from_env({})
    assert config.database_url is None and config.redis_url is None
    assert config.port == 8080
    assert config.data_dir == Path(".eventbook")


def test_the_command_exits_2_with_the_message_on_bad_configuration(tmp_path: Path) -> None:
    result = run(["serve"], environment(PORT="eighty", EVENTBOOK_DATA_DIR=str(tmp_path)))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "eventbook: configuration error: "
        "PORT='eighty' is not valid: expected an integer from 1 to 65535"
    ]
    assert not (tmp_path / "postgres").exists()


def test_help_names_every_subcommand_and_variable() -> None:
    result = run(["--help"], environment())
    assert result.returncode == 0
    for word in ("serve", "worker", "migrate", "DATABASE_URL", "REDIS_URL", "JWT_SECRET",
                 "EVENTBOOK_DATA_DIR"):
        assert word in result.stdout
    serve_help = run(["serve", "--help"], environment()).stdout
    assert "--no-actors" in serve_help and "DATABASE_URL" in serve_help


def test_worker_help_names_every_actor() -> None:
    worker_help = " ".join(run(["worker", "--help"], environment()).stdout.split())
    assert f"actor names: {', '.join(ACTOR_NAMES)}" in worker_help


def test_startup_log_redacts_secrets(config: Config) -> None:
    shown = config.replace(
        database_url="postgresql://app:hunter2@db.internal/eventbook"
    ).redacted()
    assert shown["jwt_secret"] == "***"
    assert "hunter2" not in shown["database_url"]
    assert shown["database_url"] == "postgresql://app:***@db.internal/eventbook"


# -- migrations ------------------------------------------------------------------------


async def test_concurrent_starts_apply_each_migration_exactly_once(servers) -> None:
    name = "test_migrations_race"
    admin = await asyncpg.connect(servers.database_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = with_database(servers.database_url, name)
        conns = [await asyncpg.connect(url) for _ in range(6)]
        results = await asyncio.gather(*(db.migrate(conn) for conn in conns))
        applied = [name for result in results for name in result]
        expected = [migration for migration, _ in db.migrations()]
        assert sorted(applied) == sorted(expected)
        rows = await conns[0].fetch("SELECT name FROM schema_migrations ORDER BY name")
        assert [row["name"] for row in rows] == expected
        assert await db.migrate(conns[0]) == []
        for conn in conns:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def test_migrate_command_applies_pending_migrations(config: Config) -> None:
    result = run(["migrate"], environment(config))
    assert result.returncode == 0, result.stderr
    assert "migrations_done" in result.stderr
    assert result.stdout.startswith(("applied ", "no pending migrations"))


# -- readiness -------------------------------------------------------------------------


async def test_readyz_is_503_while_redis_is_down_and_200_after(
    make_api, tmp_path: Path
) -> None:
    private = EmbeddedServices(tmp_path)
    redis_url = private.start_redis()
    try:
        api: Api = await make_api(redis_url=redis_url)
        assert (await api.get("/readyz")).status == 200
        private.stop_redis()
        answer = await api.get("/readyz")
        body = await assert_problem(answer, 503, "not_ready")
        assert body["checks"] == {"postgres": "ok", "redis": "down"}
        assert (await api.get("/healthz")).status == 200
        private.start_redis()
        assert (await api.get("/readyz")).status == 200
    finally:
        private.stop_redis()


async def test_readyz_is_503_while_redis_refuses_writes_and_200_after(make_api) -> None:
    """Redis that answers PING but refuses writes (out of memory; a replica's READONLY is
    the same kind of refusal) cannot take the outbox or the rate limits: not ready."""
    api: Api = await make_api()
    client = api.app[REDIS]
    await client.config_set("maxmemory-policy", "noeviction")
    await client.config_set("maxmemory", "1")
    try:
        body = await assert_problem(await api.get("/readyz"), 503, "not_ready")
        assert body["checks"] == {"postgres": "ok", "redis": "read_only"}
        assert "redis refuses writes" in body["detail"]
    finally:
        await client.config_set("maxmemory", "0")
    assert (await api.get("/readyz")).status == 200


async def test_readyz_is_503_while_postgres_is_read_only_and_bookings_are_503(
    api: Api, make_api, config: Config, servers: Servers, organizer: User, customer: User
) -> None:
    """A database that only reads (a standby, default_transaction_read_only): not ready,
    and a booking is a 503 to retry, not a 500."""
    event = await api.create_event(organizer)
    assert config.database_url is not None
    name = config.database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(servers.database_url)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        # A new app: its connections start read-only.
        read_only: Api = await make_api()
        body = await assert_problem(await read_only.get("/readyz"), 503, "not_ready")
        assert body["checks"] == {"postgres": "read_only", "redis": "ok"}
        await assert_problem(await read_only.book(customer, event), 503, "service_unavailable")
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        await admin.close()


# -- processes -------------------------------------------------------------------------


async def test_serve_uses_the_servers_it_is_given_and_starts_none(
    config: Config, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = Server(environment(config, EVENTBOOK_DATA_DIR=str(data_dir)), tmp_path / "log")
    try:
        await server.wait_ready()
        assert not (data_dir / "postgres").exists()
        assert not (data_dir / "redis").exists()
    finally:
        assert server.stop() == 0
    assert '"event": "stopped"' in server.output
    # The startup line shows the port of --port, not the environment's default.
    lines = [json.loads(line) for line in server.output.splitlines() if line.startswith("{")]
    [starting] = [line for line in lines if line["event"] == "starting"]
    assert starting["config"]["port"] == server.port


def test_worker_starts_logs_and_stops_cleanly_on_sigterm(config: Config, tmp_path: Path) -> None:
    worker = Process(["worker"], environment(config), tmp_path / "worker.log")
    try:
        worker.wait_for_output("worker_running")
    finally:
        assert worker.stop(signal.SIGTERM) == 0
    assert "worker_stopping" in worker.output
    assert '"event": "stopped"' in worker.output


# Stops the worker by SIGTERM once its actors run, then prints every module it loaded.
WORKER_MODULES = """
import json, os, signal, sys
from eventbook.actors import supervisor
from eventbook.cli import main

start = supervisor.Supervisor.start
def start_then_stop(self):
    start(self)
    os.kill(os.getpid(), signal.SIGTERM)
supervisor.Supervisor.start = start_then_stop
status = main(sys.argv[1:])
print(json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""

# The API's handlers and its document: the worker serves none of them.
HTTP_API_MODULES = {
    "eventbook.accounts", "eventbook.announcements", "eventbook.app", "eventbook.bookings",
    "eventbook.booking_batcher", "eventbook.events", "eventbook.notifications",
    "eventbook.openapi",
}


def test_the_worker_imports_no_http_handler_module(config: Config) -> None:
    answer = subprocess.run(
        [sys.executable, "-c", WORKER_MODULES, "worker", "--metrics-port", str(free_port())],
        env=environment(config), capture_output=True, text=True, timeout=60,
    )
    assert answer.returncode == 0, answer.stderr
    report = json.loads(answer.stdout.splitlines()[-1])
    assert report["status"] == 0
    loaded = set(report["modules"])
    assert "eventbook.probe" in loaded  # the small probe app is allowed, and was served
    assert loaded & HTTP_API_MODULES == set()


@pytest.mark.slow
async def test_embedded_servers_are_shared_and_stopped_by_the_last_process(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    env = environment(EVENTBOOK_DATA_DIR=str(data_dir))
    first = Server(env, tmp_path / "first.log")
    second = None
    try:
        await first.wait_ready(timeout=120)
        second = Server(env, tmp_path / "second.log")
        await second.wait_ready()
        async with aiohttp.ClientSession() as session:
            answer = await session.post(
                f"{first.url}/api/v1/auth/register",
                json={"email": "kept@example.com", "password": "long enough", "name": "K",
                      "role": "customer"},
            )
            assert answer.status == 201
            # The second process sees the first one's data: one database, shared.
            answer = await session.post(
                f"{second.url}/api/v1/auth/login",
                json={"email": "kept@example.com", "password": "long enough"},
            )
            assert answer.status == 200
        services = EmbeddedServices(data_dir)
        assert first.stop() == 0
        assert services.postgres_port() is not None, "stopped while still in use"
        assert services.redis_port() is not None
        assert second.stop() == 0
        second = None
        assert services.postgres_port() is None
        assert services.redis_port() is None
        # Data survives a restart.
        third = Server(env, tmp_path / "third.log")
        try:
            await third.wait_ready(timeout=120)
            async with aiohttp.ClientSession() as session:
                answer = await session.post(
                    f"{third.url}/api/v1/auth/login",
                    json={"email": "kept@example.com", "password": "long enough"},
                )
                assert answer.status == 200
        finally:
            assert third.stop() == 0
    finally:
        first.stop()
        if second is not None:
            second.stop()


README = (Path(__file__).parent.parent / "README.md").read_text()


def exports(output: str) -> dict[str, str]:
    pairs = [shlex.split(line.removeprefix("export "))[0] for line in output.splitlines()]
    return dict(pair.split("=", 1) for pair in pairs)


async def test_embedded_start_keeps_the_servers_for_web_and_worker_until_stop(
    tmp_path: Path,
) -> None:
    env = environment(EVENTBOOK_DATA_DIR=str(tmp_path / "data"))
    assert run(["embedded", "env"], env).returncode == 1  # nothing runs yet
    started = run(["embedded", "start"], env, timeout=120)
    assert started.returncode == 0, started.stderr
    try:
        given = exports(started.stdout)
        assert set(given) == {"DATABASE_URL", "REDIS_URL", "JWT_SECRET"}
        assert json.loads(run(["embedded", "env", "--json"], env).stdout) == given
        # An embedded-mode process that joins and leaves does not stop kept servers.
        assert run(["migrate"], env).returncode == 0
        # A process given the printed environment uses them.
        migrated = run(["migrate", "--json"], {**environment(), **given})
        assert migrated.returncode == 0, migrated.stderr
        conn = await asyncpg.connect(given["DATABASE_URL"])
        await conn.close()
    finally:
        stopped = run(["embedded", "stop"], env, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    services = EmbeddedServices(tmp_path / "data")
    assert services.postgres_port() is None and services.redis_port() is None


def test_the_readme_documents_every_variable() -> None:
    missing = [s.env for s in SETTINGS if f"`{s.env}`" not in README]
    assert missing == []


def test_the_readme_configuration_table_lists_only_real_variables() -> None:
    table = README.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    listed = {name for row in rows for name in re.findall(r"`([A-Z0-9_]+)`", row)}
    assert listed == {s.env for s in SETTINGS}
    help_text = run(["--help"], environment()).stdout
    assert [name for name in sorted(listed) if name not in help_text] == []


def test_the_readme_shows_every_command_in_help() -> None:
    help_text = run(["--help"], environment()).stdout
    commands = re.findall(r"^    ([a-z]+)\s", help_text, re.MULTILINE)
    assert {"serve", "worker", "migrate", "check", "queues", "dlq", "user"} <= set(commands)
    for command in commands:
        assert f"`eventbook {command}" in README or f"\neventbook {command}" in README, command
