"""The `eventbook` command: serve, worker, migrate and operator tools."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import re
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import marshmallow
import structlog
from aiohttp import web

from eventbook import connections, db, topics
from eventbook.config import SETTINGS, Config, ConfigError, parse_processes, redact_url
from eventbook.embedded import EmbeddedError, EmbeddedServices
from eventbook.logging import configure as configure_logging
from eventbook.outages import POSTGRES_ERRORS, REDIS_ERRORS

log = structlog.get_logger("eventbook")

ENVIRONMENT_HELP = "environment variables:\n" + "\n".join(
    f"  {setting.env:<32} {setting.help}" for setting in SETTINGS
)


class CommandError(Exception):
    """A failure the operator can act on: printed as one line, the process exits `status`."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def unreachable(what: str, url: str | None, variable: str, exc: BaseException) -> CommandError:
    reason = " ".join((str(exc) or type(exc).__name__).split()).rstrip(".")
    where = redact_url(url) if url else "(unset)"
    return CommandError(
        f"cannot reach {what} at {where}: {reason}. Start it, or set {variable} to a "
        f"running server (unset, eventbook runs its own under EVENTBOOK_DATA_DIR)"
    )


async def connect_postgres(config: Config) -> asyncpg.Connection:
    """One connection to the server itself, never through a pooler: migrate holds a
    session advisory lock on it, and uses prepared statements."""
    url = config.direct_url
    assert url is not None
    variable = "DATABASE_DIRECT_URL" if config.database_direct_url else "DATABASE_URL"
    try:
        return await asyncpg.connect(url, timeout=10)
    except POSTGRES_ERRORS as exc:
        raise unreachable("PostgreSQL", url, variable, exc) from exc


async def enter_postgres(
    stack: contextlib.AsyncExitStack, config: Config, min_size: int | None = None,
    max_size: int | None = None,
) -> asyncpg.Pool:
    """connections.open_postgres on `stack`, a failure to connect told as a CommandError."""
    try:
        return await stack.enter_async_context(
            connections.open_postgres(config, min_size, max_size)
        )
    except POSTGRES_ERRORS as exc:
        raise unreachable("PostgreSQL", config.database_url, "DATABASE_URL", exc) from exc


async def ping_redis(config: Config, client: connections.RedisClient) -> None:
    try:
        await client.ping()
    except REDIS_ERRORS as exc:
        raise unreachable("Redis", config.redis_url, "REDIS_URL", exc) from exc


def answer(args: argparse.Namespace, result: Any, text: Callable[[Any], str]) -> None:
    """An operator command's answer, the only thing it writes to stdout: JSON with
    --json (logs go to stderr, so `... --json | python3 -m json.tool` works), else text."""
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2, default=str))
    else:
        print(text(result))


def dev_jwt_secret(data_dir: Path) -> str:
    """The embedded run's JWT key: made once, kept (mode 600) in the data dir."""
    path = data_dir / "jwt_secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


@contextlib.contextmanager
def running_services(config: Config) -> Iterator[Config]:
    """Start (or join) embedded servers for what the environment leaves unset."""
    need_postgres = config.database_url is None
    need_redis = config.redis_url is None
    if not (need_postgres or need_redis):
        yield config
        return
    embedded = EmbeddedServices(config.data_dir)
    try:
        database_url, redis_url = embedded.start(postgres=need_postgres, redis=need_redis)
        config = config.replace(
            database_url=database_url or config.database_url,
            redis_url=redis_url or config.redis_url,
            jwt_secret=config.jwt_secret or dev_jwt_secret(config.data_dir),
        )
        yield config
    finally:
        embedded.release()


async def migrate_database(config: Config) -> list[str]:
    conn = await connect_postgres(config)
    try:
        return await db.migrate(conn)
    except db.MigrationError as exc:
        raise CommandError(str(exc)) from None
    finally:
        await conn.close()


# -- subcommands ---------------------------------------------------------------------


def cmd_serve(config: Config, args: argparse.Namespace) -> int:
    # The flags win over the environment, in the startup log's configuration too.
    config = config.replace(host=args.host or config.host, port=args.port or config.port,
                            processes=args.processes or config.processes)
    if args.process_index is None and config.processes > 1:
        return serve_processes(config, args)
    return serve_one(config, args)


def serve_one(config: Config, args: argparse.Namespace) -> int:
    """One server: this process, or child `--process-index` of serve_processes, which
    migrated already and shares the port with its siblings."""
    from eventbook.app import create_app
    from eventbook.processes import watch_parent

    child = args.process_index is not None
    host, port = config.host, config.port
    with running_services(config) as config:
        log.info("starting", command="serve", actors=not args.no_actors,
                 **({"pid": os.getpid()} if child else {"config": config.redacted()}))

        watching: set[asyncio.Task[None]] = set()

        async def build() -> web.Application:
            if child:
                watching.add(asyncio.create_task(watch_parent(os.getppid())))
            else:
                await migrate_database(config)
            log.info("listening", host=host, port=port)
            # Bound like the worker's, to EVENTBOOK_HOST, whatever --host says.
            private = None if args.metrics_port is None else (config.host, args.metrics_port)
            return create_app(config, actors=not args.no_actors, private_metrics=private)

        # aiohttp (3.14) starts the keep-alive timer when a connection opens and closes the
        # connection if no complete request has arrived when it fires: this one setting
        # frees connections that stay idle and ones that trickle their headers in.
        web.run_app(
            build(), host=host, port=port, print=None, access_log=None,
            shutdown_timeout=args.shutdown_timeout, handle_signals=True,
            keepalive_timeout=config.keepalive_timeout_seconds, reuse_port=child or None,
        )
    log.info("stopped", command="serve")
    return 0


def serve_processes(config: Config, args: argparse.Namespace) -> int:
    """`serve --processes N`: start (or join) the embedded servers, migrate once, then
    run N children of serve_one on the one port (eventbook.processes supervises them).
    Process 0 runs the actors, unless --no-actors; each child serves /metrics of its own
    on --metrics-port plus its index."""
    from eventbook.processes import Parent

    count = config.processes
    with running_services(config) as config:
        log.info("starting", command="serve", processes=count, actors=not args.no_actors,
                 config=config.redacted())
        asyncio.run(prepare_processes(config, count))

        def command(index: int) -> list[str]:
            argv = ["serve", "--process-index", str(index), "--host", config.host,
                    "--port", str(config.port), "--shutdown-timeout", str(args.shutdown_timeout)]
            if args.no_actors or index > 0:
                argv.append("--no-actors")
            if args.metrics_port is not None:
                argv += ["--metrics-port", str(args.metrics_port + index)]
            return argv

        # The servers the parent found or started, for every child alike.
        env = dict(os.environ)
        env.update({"DATABASE_URL": config.database_url or "",
                    "REDIS_URL": config.redis_url or "", "JWT_SECRET": config.jwt_secret or ""})
        status = Parent(count, command, env, args.shutdown_timeout).run()
    log.info("stopped", command="serve", status=status)
    return status


async def prepare_processes(config: Config, count: int) -> None:
    """Migrate once for every child; warn when their pools together may ask PostgreSQL
    for more connections than it allows."""
    await migrate_database(config)
    conn = await connect_postgres(config)
    try:
        allowed = int(await conn.fetchval("SHOW max_connections"))
    finally:
        await conn.close()
    wanted = count * (config.db_pool_max + config.search_concurrency)
    if wanted > allowed:
        log.warning("pools_exceed_max_connections", processes=count,
                    db_pool_max=config.db_pool_max, search_pool=config.search_concurrency,
                    wanted=wanted, max_connections=allowed)


async def run_worker(
    config: Config, names: tuple[str, ...], metrics_port: int | None = None
) -> None:
    from eventbook.actors import supervised, watch_streams
    from eventbook.metrics import Metrics
    from eventbook.probe import create_probe_app, serve_probe

    # Signals first: a SIGTERM during start-up still ends in a clean stop.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await migrate_database(config)
    metrics = Metrics()
    watch_streams(metrics, config.redis_prefix)
    # Closed in reverse: the actors stop (each finishing and acknowledging the messages
    # in hand) before the probe, Redis and the pool they use.
    async with contextlib.AsyncExitStack() as stack:
        pool = await enter_postgres(stack, config)
        client = await stack.enter_async_context(connections.open_redis(config))
        if metrics_port is not None:
            probe = create_probe_app(config, metrics, pool, client, refresh=True)
            await stack.enter_async_context(serve_probe(probe, config.host, metrics_port))
        supervisor = await stack.enter_async_context(
            supervised(config, pool, client, names, metrics)
        )
        log.info("worker_running", actors=[actor.name for actor in supervisor.actors])
        await stop.wait()
        log.info("worker_stopping")


def cmd_worker(config: Config, args: argparse.Namespace) -> int:
    from eventbook.actors import ACTOR_NAMES

    names = tuple(n.strip() for n in args.actors.split(",") if n.strip()) if args.actors else ()
    unknown = sorted(set(names or config.actors) - set(ACTOR_NAMES))
    if unknown:
        print(f"eventbook: unknown actors: {', '.join(unknown)}"
              f" (known: {', '.join(ACTOR_NAMES)})", file=sys.stderr)
        return 2
    with running_services(config) as config:
        log.info("starting", command="worker", config=config.redacted())
        asyncio.run(run_worker(config, names or config.actors, args.metrics_port))
    log.info("stopped", command="worker")
    return 0


def cmd_migrate(config: Config, args: argparse.Namespace) -> int:
    with running_services(config) as config:
        applied = asyncio.run(migrate_database(config))
    log.info("migrations_done", applied=applied)
    answer(args, {"applied": applied},
           lambda r: f"applied {', '.join(r['applied'])}" if r["applied"]
           else "no pending migrations")
    return 0


def read_password(prompt_tty: bool) -> str:
    if prompt_tty:
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise CommandError("the passwords differ", status=2)
        return first
    line = sys.stdin.readline()
    if not line.strip("\r\n"):
        raise CommandError(
            "no password on standard input: give it as the first line (echo ... |), "
            "or run the command in a terminal to be asked for it", status=2,
        )
    return line.rstrip("\r\n")


def validation_message(error: marshmallow.ValidationError, options: dict[str, str]) -> str:
    """marshmallow's field -> messages as one line, fields named as the command's options."""
    messages = error.normalized_messages()  # type: ignore[no-untyped-call]
    return "; ".join(
        f"{options.get(field, field)}: {' '.join(map(str, texts))}"
        for field, texts in sorted(messages.items())
    )


def cmd_user_create(config: Config, args: argparse.Namespace) -> int:
    from eventbook.accounts import RegisterSchema, create_user
    from eventbook.auth import Passwords
    from eventbook.errors import Problem

    password = read_password(sys.stdin.isatty())
    try:
        body = RegisterSchema().load(
            {"email": args.email, "name": args.name, "role": args.role, "password": password}
        )
    except marshmallow.ValidationError as exc:
        options = {"email": "--email", "name": "--name", "role": "--role"}
        raise CommandError(validation_message(exc, options), status=2) from None

    async def create() -> dict[str, Any]:
        await migrate_database(config)
        passwords = Passwords(config)
        try:
            password_hash = await passwords.hash(body["password"])
        finally:
            passwords.close()
        async with contextlib.AsyncExitStack() as stack:
            pool = await enter_postgres(stack, config, 1, 1)
            try:
                user = await create_user(
                    pool, body["email"], password_hash, body["name"], body["role"]
                )
            except Problem as problem:
                raise CommandError(problem.detail) from None
        return dict(user)

    with running_services(config) as config:
        user = asyncio.run(create())
    answer(args, user, lambda u: f"created {u['role']} {u['email']} id={u['id']}")
    return 0


def cmd_check(config: Config, args: argparse.Namespace) -> int:
    from eventbook.check import consistency_report, reconciliation_report

    reconcile_after = _reconcile_after(config, args)

    async def check(client: Any, pool: Any) -> dict[str, list[dict[str, object]]]:
        async with pool.acquire() as conn:
            report = await consistency_report(
                conn, args.outbox_age, args.confirmation_window, args.webhook_due
            )
            return report | await reconciliation_report(
                conn, client, config.redis_prefix, reconcile_after
            )

    report = with_redis(config, check)
    findings = sum(len(rows) for rows in report.values())
    if args.json:
        print(json.dumps({"ok": findings == 0, **report}, default=str, indent=2))
    else:
        titles = {
            "ticket_counts": "events whose remaining tickets disagree with their bookings "
            "and live holds",
            "ticket_type_counts": "ticket types whose taken count disagrees with their "
            "bookings and live holds",
            "waitlist_tickets_on_sale": "ticket types the public can book while someone "
            "waits for them",
            "waitlist_reserve_unwaited": "ticket types keeping tickets reserved for a waiting "
            "list nobody is on",
            "waitlist_offers_missing": "ticket types whose reserve covers the next in line, "
            "who still waits",
            "waitlist_counts": "ticket types whose waiting-list length disagrees with its "
            "entries",
            "waitlist_order": "waiting entries passed over by a later one's offer",
            "waitlist_offer_holds": "waiting-list offers whose hold is missing or disagrees",
            "stuck_outbox": f"outbox rows older than {args.outbox_age:g} s",
            "unconfirmed_bookings": f"bookings unconfirmed after {args.confirmation_window:g} s",
            "users_without_email_key": "users whose e-mail address another user has (no log-in)",
            "webhook_deliveries_overdue": "webhook deliveries of enabled endpoints due for "
            f"more than {args.webhook_due:g} s",
            "webhook_endpoint_paused_unnotified": "webhook endpoints paused for failing "
            f"more than {args.confirmation_window:g} s ago whose owner was not mailed",
            "confirmations_to_requeue": f"bookings pending after {reconcile_after:g} s with "
            "no message to confirm them (the reconciler requeues them)",
            "offers_to_requeue": f"waiting-list offers open after {reconcile_after:g} s "
            "with no mail sent and no message to send it (the reconciler requeues them)",
            "announcements_to_resume": f"event changes unfinished after {reconcile_after:g} s "
            "with no message to go on (the reconciler resumes them)",
            "webhooks_to_requeue": f"changes older than {reconcile_after:g} s an endpoint "
            "wants with no delivery and no message to make it (the reconciler requeues "
            "them)",
            "dead_letters_to_replay": "dead letters an outage caused (the reconciler replays "
            "them)",
        }
        for kind, rows in report.items():
            print(f"{titles[kind]}: {len(rows)}")
            for row in rows:
                print("  " + " ".join(f"{key}={value}" for key, value in row.items()))
        print("ok" if findings == 0 else f"{findings} finding(s)")
    return 0 if findings == 0 else 1


def _reconcile_after(config: Config, args: argparse.Namespace) -> float:
    return float(config.reconcile_after_seconds if args.reconcile_after is None
                 else args.reconcile_after)


def cmd_reconcile(config: Config, args: argparse.Namespace) -> int:
    from eventbook.actors.reconciler import reconcile

    after = _reconcile_after(config, args)

    async def work(client: Any, pool: Any) -> Any:
        # wait=True: a pass running elsewhere finishes first, then this one runs.
        return await reconcile(pool, client, config.redis_prefix, after, wait=True)

    def text(done: dict[str, list[dict[str, Any]]]) -> str:
        lines = [f"requeued {len(done['confirmations'])} confirmation(s)"]
        lines += [f"  booking {item['booking_id']} event {item['event_id']}"
                  f" request_id={item['request_id']}" for item in done["confirmations"]]
        lines.append(f"requeued {len(done['offers'])} waiting-list offer(s)")
        lines += [f"  hold {item['hold_id']} event {item['event_id']}"
                  f" request_id={item['request_id']}" for item in done["offers"]]
        lines.append(f"resumed {len(done['announcements'])} announcement(s)")
        for item in done["announcements"]:
            pages = ",".join(str(page["page"]) for page in item["pages"])
            lines.append(f"  event {item['event_id']} version {item['version']}"
                         f" {item['action']}{' pages ' + pages if pages else ''}"
                         f" request_id={item['request_id']}")
        lines.append(f"requeued {len(done['webhooks'])} webhook message(s)")
        lines += [f"  {item['kind']} {item['message_id']} event {item['event_id']}"
                  f" request_id={item['request_id']}" for item in done["webhooks"]]
        lines.append(f"replayed {len(done['dead_letters'])} dead letter(s)")
        lines += [f"  {item['topic']} {item['id']} -> {item['new_id']} {item['kind']}"
                  f" request_id={item['request_id']}" for item in done["dead_letters"]]
        return "\n".join(lines)

    answer(args, with_redis(config, work).as_dict(), text)
    return 0


def _table(rows: list[dict[str, object]], columns: list[str]) -> str:
    widths = [max([len(c), *(len(str(r.get(c, ""))) for r in rows)]) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    for row in rows:
        cells = [str("-" if row.get(c) is None else row.get(c)) for c in columns]
        lines.append("  ".join(v.ljust(w) for v, w in zip(cells, widths, strict=True)))
    return "\n".join(lines)


def with_redis(config: Config, work: Callable[[Any, Any], Awaitable[Any]]) -> Any:
    """Run `work(redis_client, pool)` against the configured (or embedded) servers."""

    async def main() -> Any:
        async with contextlib.AsyncExitStack() as stack:
            client = await stack.enter_async_context(connections.open_redis(config))
            await ping_redis(config, client)
            pool = await enter_postgres(stack, config, 1, 2)
            return await work(client, pool)

    with running_services(config) as config:
        return asyncio.run(main())


def cmd_queues(config: Config, args: argparse.Namespace) -> int:
    from eventbook import queues

    async def work(client: Any, pool: Any) -> dict[str, Any]:
        return {
            "streams": await queues.stream_stats(client, config.redis_prefix),
            "outbox": await queues.outbox_stats(pool),
            "webhooks": await queues.webhook_stats(pool),
        }

    def text(report: dict[str, Any]) -> str:
        outbox, webhooks = report["outbox"], report["webhooks"]
        paused = webhooks["endpoints_paused"]
        return (
            _table(report["streams"],
                   ["stream", "group", "length", "consumers", "pending", "lag", "dead_letters"])
            + f"\n\noutbox: {outbox['backlog']} row(s) waiting,"
            f" oldest {outbox['oldest_age_s']} s"
            + f"\nwebhook deliveries: {webhooks['pending']} pending, {webhooks['due']} due"
            f" (oldest due {webhooks['oldest_due_age_s']} s), {webhooks['failed']} failed;"
            f" endpoints paused: {paused['failing']} failing, {paused['owner']} by owner"
        )

    answer(args, with_redis(config, work), text)
    return 0


# What Redis accepts as a stream entry id: milliseconds-sequence, each below 2**64.
ENTRY_ID = re.compile(r"(\d{1,20})-(\d{1,20})")


def check_entry_id(value: str) -> str:
    match = ENTRY_ID.fullmatch(value)
    if match is None or any(int(part) >= 2**64 for part in match.groups()):
        raise CommandError(
            f"{value!r} is not a dead-letter id: ids look like 1764000000000-0 "
            "(`eventbook dlq list` shows them)", status=2,
        )
    return value


def cmd_dlq(config: Config, args: argparse.Namespace) -> int:
    from eventbook import queues

    prefix = config.redis_prefix
    for entry_id in [args.id] if args.dlq_command == "show" else getattr(args, "ids", []):
        check_entry_id(entry_id)
    if args.dlq_command == "purge" and not args.yes:
        async def count(client: Any, pool: Any) -> int:
            return len(await queues.dead_letters(client, prefix, args.topic, limit=100_000))

        total = with_redis(config, count)
        where = args.topic or "every stream"
        if not sys.stdin.isatty():
            raise CommandError(f"refusing to purge {total} dead letter(s) of {where} without "
                               "--yes (standard input is not a terminal)", status=2)
        if input(f"Delete {total} dead letter(s) of {where}? [y/N] ").strip().lower() != "y":
            print("nothing deleted")
            return 1

    async def work(client: Any, pool: Any) -> Any:
        if args.dlq_command == "list":
            return await queues.dead_letters(client, prefix, args.topic, args.limit)
        if args.dlq_command == "show":
            return await queues.dead_letter(client, prefix, args.id)
        if args.dlq_command == "replay":
            ids = None if args.all else args.ids
            return await queues.replay(client, prefix, ids, args.topic)
        return {"purged": await queues.purge(client, prefix, args.topic)}

    if args.dlq_command == "replay" and not args.all and not args.ids:
        raise CommandError("name the dead letters to replay, or pass --all", status=2)
    result = with_redis(config, work)
    if args.dlq_command == "show" and result is None:
        raise CommandError(f"no dead letter {args.id} (`eventbook dlq list` shows them)")

    def text(result: Any) -> str:
        if args.dlq_command == "list":
            return _table(result, ["id", "topic", "kind", "attempts", "failed_at", "error"])
        if args.dlq_command == "show":
            return "\n".join(f"{key}: {value}" for key, value in result.items())
        if args.dlq_command == "replay":
            return "\n".join([
                f"replayed {len(result)} dead letter(s)",
                *(f"  {item['topic']} {item['id']} -> {item['new_id']}" for item in result),
            ])
        return f"purged {result['purged']} dead letter(s)"

    answer(args, result, text)
    return 0


def cmd_embedded(config: Config, args: argparse.Namespace) -> int:
    import shlex

    services = EmbeddedServices(config.data_dir)
    if args.embedded_command == "stop":
        if not services.stop_kept():
            raise CommandError(
                f"the servers under {services.data_dir} are in use by eventbook processes "
                "in embedded mode; they stop when the last one exits"
            )
        answer(args, {"stopped": True}, lambda _: "stopped")
        return 0
    urls = services.keep() if args.embedded_command == "start" else services.urls()
    if urls is None:
        raise CommandError(
            f"no embedded servers run under {services.data_dir}: "
            "`eventbook embedded start` starts them"
        )
    environment = {
        "DATABASE_URL": urls[0],
        "REDIS_URL": urls[1],
        "JWT_SECRET": dev_jwt_secret(config.data_dir),
    }
    answer(args, environment, lambda env: "\n".join(
        f"export {name}={shlex.quote(value)}" for name, value in env.items()
    ))
    return 0


def processes_count(text: str) -> int:
    try:
        return parse_processes(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of processes from 1 to 1024, or auto"
        ) from None


# -- parser --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from eventbook.actors import ACTOR_NAMES

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="eventbook",
        description="Event-booking server. With DATABASE_URL / REDIS_URL unset it runs "
        "private PostgreSQL and Redis servers under EVENTBOOK_DATA_DIR.",
        epilog=ENVIRONMENT_HELP,
        formatter_class=formatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[Config, argparse.Namespace], int], text: str,
            parent: argparse._SubParsersAction[argparse.ArgumentParser] = sub,
            *, process: bool = False) -> argparse.ArgumentParser:
        """A subcommand. An operator command (the default) logs to stderr and answers on
        stdout; a `process` (serve, worker) logs to stdout, as a twelve-factor process."""
        command = parent.add_parser(
            name, help=text, description=text, epilog=ENVIRONMENT_HELP, formatter_class=formatter
        )
        command.set_defaults(func=func, logs_to_stdout=process)
        return command

    serve = add(
        "serve", cmd_serve,
        "Serve the HTTP API and, unless --no-actors, run every actor in this process. "
        "Applies pending migrations first.", process=True,
    )
    serve.add_argument("--host", help="bind address (default $EVENTBOOK_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default $PORT or 8080)")
    serve.add_argument("--no-actors", action="store_true",
                       help="HTTP only; run the actors in `eventbook worker` processes")
    serve.add_argument("--metrics-port", type=int,
                       help="also serve /metrics (no token), /healthz and /readyz on this "
                            "port, bound to EVENTBOOK_HOST: for a Prometheus the public "
                            "cannot reach")
    serve.add_argument("--shutdown-timeout", type=float, default=30.0,
                       help="seconds in-flight requests get to finish on SIGTERM (default 30)")
    serve.add_argument(
        "--processes", type=processes_count, metavar="N",
        help="server processes on the one port (SO_REUSEPORT), or auto: one per usable core "
        "(default $EVENTBOOK_PROCESSES, else 1). Each has its own pools: N x "
        "(EVENTBOOK_DB_POOL_MAX + EVENTBOOK_SEARCH_CONCURRENCY) PostgreSQL connections in "
        "all. Process 0 runs the actors; /metrics shows the process that answers, and "
        "--metrics-port P gives process I the port P+I",
    )
    serve.add_argument("--process-index", type=int, help=argparse.SUPPRESS)

    worker = add(
        "worker", cmd_worker,
        "Run the background actors without HTTP. Applies pending migrations first.",
        process=True,
    )
    worker.add_argument(
        "--actors", help=f"comma-separated actor names: {', '.join(ACTOR_NAMES)} "
        "(default: $EVENTBOOK_ACTORS, else all)",
    )
    worker.add_argument(
        "--metrics-port", type=int,
        help="serve /metrics, /healthz and /readyz on this port (bound to EVENTBOOK_HOST)",
    )

    migrate = add(
        "migrate", cmd_migrate, "Apply pending database migrations, then exit (release phase)."
    )
    migrate.add_argument("--json", action="store_true", help="print JSON")

    check = add(
        "check", cmd_check,
        "Check the data: remaining tickets of events and ticket types against bookings "
        "and live holds, the waiting lists (tickets that came back are on sale only when "
        "nobody waits, else offered in the order of joining or kept reserved while too "
        "few for the next in line; lengths and offers' holds agree), outbox rows stuck, "
        "bookings left unconfirmed, users who cannot log "
        "in because another has their e-mail address, webhook deliveries overdue and "
        "endpoints paused for failing whose owner was not told, and what the reconciler "
        "would put back (confirmations, event changes and webhook messages no queue holds, "
        "dead letters an outage caused). Exits 1 when it finds anything.",
    )
    check.add_argument("--outbox-age", type=float, default=60.0,
                       help="report outbox rows older than this many seconds (default 60)")
    check.add_argument("--confirmation-window", type=float, default=600.0,
                       help="report bookings pending confirmation longer, and endpoints "
                       "paused for failing longer with no mail to their owner (default 600 s)")
    check.add_argument("--webhook-due", type=float, default=60.0, metavar="SECONDS",
                       help="report webhook deliveries of enabled endpoints due for longer "
                       "(default 60)")
    check.add_argument("--reconcile-after", type=float, metavar="SECONDS",
                       help="report what the reconciler would put back, counting work this "
                       "old as lost (default $EVENTBOOK_RECONCILE_AFTER_SECONDS, 300)")
    check.add_argument("--json", action="store_true", help="print JSON")

    reconcile_cmd = add(
        "reconcile", cmd_reconcile,
        "Run one reconciler pass now (waiting for one running elsewhere): requeue the "
        "confirmations and resume the event changes that no queue holds any more, replay "
        "the dead letters an outage caused. Prints what it did.",
    )
    reconcile_cmd.add_argument(
        "--reconcile-after", type=float, metavar="SECONDS",
        help="count work this old as lost (default $EVENTBOOK_RECONCILE_AFTER_SECONDS, 300)",
    )
    reconcile_cmd.add_argument("--json", action="store_true", help="print JSON")

    queues_cmd = add(
        "queues", cmd_queues,
        "Show each stream and consumer group: length, consumers, pending, lag, dead "
        "letters; the outbox backlog; and the webhook deliveries (pending, due, failed) and "
        "endpoints paused.",
    )
    queues_cmd.add_argument("--json", action="store_true", help="print JSON")

    dlq = add("dlq", lambda c, a: 2, "Inspect and handle dead letters.")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    topic_names = list(topics.TOPICS)
    dlq_list = add("list", cmd_dlq, "List dead letters.", parent=dlq_sub)
    dlq_list.add_argument("--topic", choices=topic_names)
    dlq_list.add_argument("--limit", type=int, default=100)
    dlq_show = add("show", cmd_dlq, "Show one dead letter in full.", parent=dlq_sub)
    dlq_show.add_argument("id")
    dlq_replay = add(
        "replay", cmd_dlq,
        "Put dead letters back on their stream (after fixing what made them fail).",
        parent=dlq_sub,
    )
    dlq_replay.add_argument("ids", nargs="*", metavar="ID")
    dlq_replay.add_argument("--all", action="store_true", help="every dead letter")
    dlq_replay.add_argument("--topic", choices=topic_names)
    dlq_purge = add("purge", cmd_dlq, "Delete dead letters (asks first).", parent=dlq_sub)
    dlq_purge.add_argument("--topic", choices=topic_names)
    dlq_purge.add_argument("--yes", action="store_true", help="do not ask")
    for command in (dlq_list, dlq_show, dlq_replay, dlq_purge):
        command.add_argument("--json", action="store_true", help="print JSON")

    embedded = add(
        "embedded", lambda c, a: 2,
        "Keep the embedded PostgreSQL and Redis running, for `web` and `worker` processes "
        "(eval \"$(eventbook embedded start)\").",
    )
    embedded_sub = embedded.add_subparsers(dest="embedded_command", required=True,
                                           metavar="ACTION")
    for action, text in (
        ("start", "Start the servers under EVENTBOOK_DATA_DIR (or join running ones) and keep "
                  "them running; print DATABASE_URL, REDIS_URL and JWT_SECRET as shell "
                  "exports."),
        ("env", "Print the running servers' DATABASE_URL, REDIS_URL and JWT_SECRET as shell "
                "exports."),
        ("stop", "Stop the kept servers (refused while eventbook processes in embedded mode "
                 "use them)."),
    ):
        add(action, cmd_embedded, text, parent=embedded_sub).add_argument(
            "--json", action="store_true", help="print JSON"
        )

    user = add("user", lambda c, a: 2, "Manage accounts.")
    user_sub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    create = add(
        "create", cmd_user_create,
        "Create an account. The password is read from a prompt, or from the first line "
        "of standard input when it is not a terminal; never from the command line.",
        parent=user_sub,
    )
    create.add_argument("--email", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=["organizer", "customer"])
    create.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"eventbook: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_format, config.log_level,
                      sys.stdout if args.logs_to_stdout else sys.stderr,
                      getattr(args, "process_index", None))
    try:
        return int(args.func(config, args))
    except CommandError as exc:
        print(f"eventbook: {exc}", file=sys.stderr)
        return exc.status
    except EmbeddedError as exc:
        print(f"eventbook: {exc}", file=sys.stderr)
        return 1
