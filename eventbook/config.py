"""Configuration from the environment (twelve-factor), validated once at start."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ConfigError(Exception):
    """A bad configuration value; its message is one line naming the variable."""


@dataclasses.dataclass(frozen=True)
class Setting:
    env: str
    help: str


# Every variable the program reads, for --help and the README.
SETTINGS: list[Setting] = [
    Setting("DATABASE_URL", "PostgreSQL URL; unset: a private server in EVENTBOOK_DATA_DIR"),
    Setting("DATABASE_DIRECT_URL",
            "the PostgreSQL server itself, when DATABASE_URL is a pooler: LISTEN and "
            "migrations use it (default DATABASE_URL; required with "
            "EVENTBOOK_DB_POOLER=transaction)"),
    Setting("EVENTBOOK_DB_POOLER",
            "none | transaction: DATABASE_URL is a pooler in transaction mode (PgBouncer "
            "pool_mode=transaction) (default none)"),
    Setting("DATABASE_READ_URL",
            "PostgreSQL URL of a streaming replica that serves event browsing; unset: all "
            "reads on DATABASE_URL"),
    Setting("EVENTBOOK_READ_MAX_LAG_SECONDS",
            "browsing reads go to the primary while the replica is further behind than "
            "this (default 5)"),
    Setting("REDIS_URL", "Redis URL; unset: a private server under EVENTBOOK_DATA_DIR"),
    Setting("JWT_SECRET", "HS256 key, at least 32 bytes; required with DATABASE_URL"),
    Setting("PORT", "HTTP port (default 8080)"),
    Setting("EVENTBOOK_HOST", "HTTP bind address (default 127.0.0.1)"),
    Setting("EVENTBOOK_DATA_DIR", "embedded servers' data, dev JWT key (default .eventbook)"),
    Setting("EVENTBOOK_LOG_FORMAT", "auto | json | console (default auto: console on a terminal)"),
    Setting("EVENTBOOK_LOG_LEVEL", "debug | info | warning | error (default info)"),
    Setting("EVENTBOOK_PROCESSES",
            "server processes of `serve` on its one port, or auto: one per usable core "
            "(default 1)"),
    Setting("EVENTBOOK_DB_POOL_MIN", "asyncpg pool minimum size, per process (default 2)"),
    Setting("EVENTBOOK_DB_POOL_MAX", "asyncpg pool maximum size, per process (default 20)"),
    Setting("EVENTBOOK_DB_CONNECT_TIMEOUT_SECONDS",
            "give up opening a PostgreSQL connection after this long (default 2)"),
    Setting("EVENTBOOK_DB_ACQUIRE_TIMEOUT_SECONDS",
            "give up waiting for a pooled PostgreSQL connection after this long (default 2)"),
    Setting("EVENTBOOK_DB_STATEMENT_TIMEOUT_SECONDS",
            "give up on one PostgreSQL statement after this long (default 3)"),
    Setting("EVENTBOOK_REDIS_POOL_MAX", "Redis connection pool size (default 50)"),
    Setting("EVENTBOOK_REDIS_PREFIX", "prefix of every Redis key, no braces (default eventbook:)"),
    Setting("EVENTBOOK_REDIS_CLUSTER",
            "true | false: REDIS_URL is a Redis Cluster node (default: ask the server)"),
    Setting("EVENTBOOK_JWT_TTL_SECONDS", "access token lifetime (default 3600)"),
    Setting("EVENTBOOK_JWT_ISSUER", "token iss claim (default eventbook)"),
    Setting("EVENTBOOK_JWT_AUDIENCE", "token aud claim (default eventbook-api)"),
    Setting("EVENTBOOK_ORGANIZER_SIGNUP", "true | false: organizers self-register (default true)"),
    Setting("EVENTBOOK_ARGON2_TIME_COST", "Argon2id iterations (default 3)"),
    Setting("EVENTBOOK_ARGON2_MEMORY_KIB", "Argon2id memory in KiB (default 65536)"),
    Setting("EVENTBOOK_LOGIN_LIMIT", "login attempts per e-mail per window (default 10)"),
    Setting("EVENTBOOK_LOGIN_IP_LIMIT", "login attempts per client address, window (default 100)"),
    Setting("EVENTBOOK_LOGIN_WINDOW_SECONDS", "login rate-limit window (default 300)"),
    Setting("EVENTBOOK_SIGNUP_IP_LIMIT",
            "sign-ups per client address per window, 0 = off (default 20)"),
    Setting("EVENTBOOK_SIGNUP_WINDOW_SECONDS", "sign-up rate-limit window (default 3600)"),
    Setting("EVENTBOOK_HASH_THREADS",
            "password-hashing threads per lane, sign-up and log-in (default 1)"),
    Setting("EVENTBOOK_HASH_QUEUE",
            "hashes waiting per lane; one more is answered 503 (default 16)"),
    Setting("EVENTBOOK_BOOKING_RATE", "bookings per customer per second, 0 = off (default 10)"),
    Setting("EVENTBOOK_HOLD_SECONDS",
            "how long a checkout hold keeps its tickets (default 600)"),
    Setting("EVENTBOOK_WAITLIST_OFFER_SECONDS",
            "how long a waiting-list offer holds its tickets for the next in line "
            "(default 3600)"),
    Setting("EVENTBOOK_BROWSE_RATE",
            "event reads per client address (per user when signed in) per second, "
            "0 = off (default 10)"),
    Setting("EVENTBOOK_SEARCH_TIMEOUT_MS",
            "an event search running longer is stopped: 422 search_too_broad (default 500)"),
    Setting("EVENTBOOK_SEARCH_CONCURRENCY",
            "event searches run at once per process, each on its own connection (default 2)"),
    Setting("EVENTBOOK_METRICS_TOKEN",
            "serve /metrics on the API port to Bearer this token (16+ bytes; unset: 404)"),
    Setting("EVENTBOOK_METRICS_REFRESH_SECONDS",
            "how often the outbox and stream gauges are read (default 5)"),
    Setting("EVENTBOOK_MAX_BODY_BYTES", "largest request body (default 1048576)"),
    Setting("EVENTBOOK_KEEPALIVE_TIMEOUT_SECONDS",
            "close a connection that sends no complete request this long (default 75)"),
    Setting("EVENTBOOK_BODY_TIMEOUT_SECONDS",
            "a request body not read in full this long is 408 (default 30)"),
    Setting("EVENTBOOK_MAIL_LATENCY_MS", "simulated mail server latency (default 0)"),
    Setting("EVENTBOOK_MAIL_FAILURE_RATE", "simulated mail failure probability 0..1 (default 0)"),
    Setting("EVENTBOOK_SMTP_URL", "smtp[s]://user:pass@host:port: send real mail instead"),
    Setting("EVENTBOOK_MAIL_FROM", "sender address (default eventbook@localhost)"),
    Setting("EVENTBOOK_CLAIM_IDLE_MS", "reclaim messages pending this long (default 30000)"),
    Setting("EVENTBOOK_MAX_ATTEMPTS", "attempts before a message is dead-lettered (default 5)"),
    Setting("EVENTBOOK_FANOUT_CONCURRENCY", "mails in flight per fan-out actor (default 500)"),
    Setting("EVENTBOOK_RECONCILE_INTERVAL_SECONDS", "time between reconciler passes (default 30)"),
    Setting("EVENTBOOK_RECONCILE_AFTER_SECONDS",
            "work this old that no queue holds is put back (default 300)"),
    Setting("EVENTBOOK_ACTORS", "actors this process runs, comma-separated (default all)"),
    Setting("EVENTBOOK_WEBHOOK_ALLOW_HTTP",
            "true | false: webhook URLs may be http:// as well as https:// (default false)"),
    Setting("EVENTBOOK_WEBHOOK_ALLOW_PRIVATE",
            "true | false: webhook URLs may reach loopback, private, link-local and other "
            "non-public addresses (default false)"),
    Setting("EVENTBOOK_WEBHOOK_TIMEOUT_SECONDS",
            "a webhook attempt without a complete answer this long fails (default 10)"),
    Setting("EVENTBOOK_WEBHOOK_RETRY_SCHEDULE",
            "seconds before each retry of a failed webhook delivery, comma-separated, "
            "+-20% jitter (default 5,300,1800,7200,18000,36000,36000: about 27 hours)"),
    Setting("EVENTBOOK_WEBHOOK_CONCURRENCY",
            "webhook attempts in flight per worker, all endpoints together (default 256)"),
    Setting("EVENTBOOK_WEBHOOK_ENDPOINT_CONCURRENCY",
            "webhook attempts in flight per worker to one endpoint (default 32)"),
    Setting("EVENTBOOK_WEBHOOK_PAUSE_AFTER_FAILURES",
            "an endpoint is paused (and its owner mailed) after this many failed attempts "
            "in a row ... (default 10)"),
    Setting("EVENTBOOK_WEBHOOK_PAUSE_AFTER_SECONDS",
            "... spread over at least this long without a success (default 86400)"),
    Setting("EVENTBOOK_WEBHOOK_RETENTION_DAYS",
            "webhook deliveries succeeded or failed this many days ago are deleted "
            "(default 30)"),
    Setting("EVENTBOOK_WEBHOOK_SECRET_GRACE_SECONDS",
            "after a secret rotation, messages are signed with the old secret too for this "
            "long (default 86400)"),
]

# The retry schedule of a failed webhook delivery: after the first attempt, one retry
# after each delay (the Standard Webhooks reference schedule), about 27 hours in all.
WEBHOOK_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


@dataclasses.dataclass(frozen=True)
class Config:
    database_url: str | None = None
    database_direct_url: str | None = None
    db_pooler: str = "none"
    database_read_url: str | None = None
    read_max_lag_seconds: float = 5.0
    redis_url: str | None = None
    jwt_secret: str | None = None
    port: int = 8080
    host: str = "127.0.0.1"
    data_dir: Path = Path(".eventbook")
    log_format: str = "auto"
    log_level: str = "info"
    processes: int = 1
    db_pool_min: int = 2
    db_pool_max: int = 20
    db_connect_timeout_seconds: int = 2
    db_acquire_timeout_seconds: int = 2
    db_statement_timeout_seconds: int = 3
    redis_pool_max: int = 50
    redis_prefix: str = "eventbook:"
    # None: ask the server at start (INFO cluster) whether it is a cluster node.
    redis_cluster: bool | None = None
    jwt_ttl_seconds: int = 3600
    jwt_issuer: str = "eventbook"
    jwt_audience: str = "eventbook-api"
    organizer_signup: bool = True
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    login_limit: int = 10
    login_ip_limit: int = 100
    login_window_seconds: int = 300
    signup_ip_limit: int = 20
    signup_window_seconds: int = 3600
    hash_threads: int = 1
    hash_queue: int = 16
    booking_rate: int = 10
    hold_seconds: int = 600
    waitlist_offer_seconds: int = 3600
    browse_rate: int = 10
    search_timeout_ms: int = 500
    search_concurrency: int = 2
    metrics_token: str | None = None
    metrics_refresh_seconds: float = 5.0
    max_body_bytes: int = 1024 * 1024
    keepalive_timeout_seconds: int = 75
    body_timeout_seconds: int = 30
    mail_latency_ms: int = 0
    mail_failure_rate: float = 0.0
    smtp_url: str | None = None
    mail_from: str = "eventbook@localhost"
    claim_idle_ms: int = 30000
    max_attempts: int = 5
    fanout_concurrency: int = 500
    reconcile_interval_seconds: int = 30
    reconcile_after_seconds: int = 300
    actors: tuple[str, ...] = ()
    webhook_allow_http: bool = False
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = 10.0
    webhook_retry_schedule: tuple[float, ...] = WEBHOOK_RETRY_SCHEDULE
    webhook_concurrency: int = 256
    webhook_endpoint_concurrency: int = 32
    webhook_pause_after_failures: int = 10
    webhook_pause_after_seconds: int = 86400
    webhook_secret_grace_seconds: int = 86400
    webhook_retention_days: int = 30

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        reader = _Reader(env)
        config = cls(
            database_url=reader.url("DATABASE_URL", ("postgres", "postgresql")),
            database_direct_url=reader.url("DATABASE_DIRECT_URL", ("postgres", "postgresql")),
            db_pooler=reader.choice("EVENTBOOK_DB_POOLER", "none", ("none", "transaction")),
            database_read_url=reader.url("DATABASE_READ_URL", ("postgres", "postgresql")),
            read_max_lag_seconds=reader.number(
                "EVENTBOOK_READ_MAX_LAG_SECONDS", 5.0, 0.1, 3600.0
            ),
            redis_url=reader.url("REDIS_URL", ("redis", "rediss", "unix")),
            jwt_secret=reader.optional("JWT_SECRET"),
            port=reader.integer("PORT", 8080, 1, 65535),
            host=reader.text("EVENTBOOK_HOST", "127.0.0.1"),
            data_dir=Path(reader.text("EVENTBOOK_DATA_DIR", ".eventbook")),
            log_format=reader.choice("EVENTBOOK_LOG_FORMAT", "auto", ("auto", "json", "console")),
            log_level=reader.choice(
                "EVENTBOOK_LOG_LEVEL", "info", ("debug", "info", "warning", "error")
            ),
            processes=reader.processes("EVENTBOOK_PROCESSES"),
            db_pool_min=reader.integer("EVENTBOOK_DB_POOL_MIN", 2, 0, 1000),
            db_pool_max=reader.integer("EVENTBOOK_DB_POOL_MAX", 20, 1, 1000),
            db_connect_timeout_seconds=reader.integer(
                "EVENTBOOK_DB_CONNECT_TIMEOUT_SECONDS", 2, 1, 600
            ),
            db_acquire_timeout_seconds=reader.integer(
                "EVENTBOOK_DB_ACQUIRE_TIMEOUT_SECONDS", 2, 1, 600
            ),
            db_statement_timeout_seconds=reader.integer(
                "EVENTBOOK_DB_STATEMENT_TIMEOUT_SECONDS", 3, 1, 86400
            ),
            redis_pool_max=reader.integer("EVENTBOOK_REDIS_POOL_MAX", 50, 1, 10000),
            redis_prefix=reader.text("EVENTBOOK_REDIS_PREFIX", "eventbook:"),
            redis_cluster=reader.tristate("EVENTBOOK_REDIS_CLUSTER"),
            jwt_ttl_seconds=reader.integer("EVENTBOOK_JWT_TTL_SECONDS", 3600, 60, 30 * 86400),
            jwt_issuer=reader.text("EVENTBOOK_JWT_ISSUER", "eventbook"),
            jwt_audience=reader.text("EVENTBOOK_JWT_AUDIENCE", "eventbook-api"),
            organizer_signup=reader.boolean("EVENTBOOK_ORGANIZER_SIGNUP", True),
            argon2_time_cost=reader.integer("EVENTBOOK_ARGON2_TIME_COST", 3, 1, 100),
            argon2_memory_kib=reader.integer("EVENTBOOK_ARGON2_MEMORY_KIB", 65536, 64, 4 << 20),
            login_limit=reader.integer("EVENTBOOK_LOGIN_LIMIT", 10, 1, 1_000_000),
            login_ip_limit=reader.integer("EVENTBOOK_LOGIN_IP_LIMIT", 100, 1, 1_000_000),
            login_window_seconds=reader.integer("EVENTBOOK_LOGIN_WINDOW_SECONDS", 300, 1, 86400),
            signup_ip_limit=reader.integer("EVENTBOOK_SIGNUP_IP_LIMIT", 20, 0, 1_000_000),
            signup_window_seconds=reader.integer(
                "EVENTBOOK_SIGNUP_WINDOW_SECONDS", 3600, 1, 86400
            ),
            hash_threads=reader.integer("EVENTBOOK_HASH_THREADS", 1, 1, 256),
            hash_queue=reader.integer("EVENTBOOK_HASH_QUEUE", 16, 0, 100_000),
            booking_rate=reader.integer("EVENTBOOK_BOOKING_RATE", 10, 0, 1_000_000),
            hold_seconds=reader.integer("EVENTBOOK_HOLD_SECONDS", 600, 1, 86400),
            waitlist_offer_seconds=reader.integer(
                "EVENTBOOK_WAITLIST_OFFER_SECONDS", 3600, 1, 7 * 86400
            ),
            browse_rate=reader.integer("EVENTBOOK_BROWSE_RATE", 10, 0, 1_000_000),
            search_timeout_ms=reader.integer("EVENTBOOK_SEARCH_TIMEOUT_MS", 500, 1, 600_000),
            search_concurrency=reader.integer("EVENTBOOK_SEARCH_CONCURRENCY", 2, 1, 1000),
            metrics_token=reader.optional("EVENTBOOK_METRICS_TOKEN"),
            metrics_refresh_seconds=reader.number(
                "EVENTBOOK_METRICS_REFRESH_SECONDS", 5.0, 0.05, 3600.0
            ),
            max_body_bytes=reader.integer("EVENTBOOK_MAX_BODY_BYTES", 1 << 20, 1024, 1 << 30),
            keepalive_timeout_seconds=reader.integer(
                "EVENTBOOK_KEEPALIVE_TIMEOUT_SECONDS", 75, 1, 3600
            ),
            body_timeout_seconds=reader.integer("EVENTBOOK_BODY_TIMEOUT_SECONDS", 30, 1, 3600),
            mail_latency_ms=reader.integer("EVENTBOOK_MAIL_LATENCY_MS", 0, 0, 600_000),
            mail_failure_rate=reader.fraction("EVENTBOOK_MAIL_FAILURE_RATE", 0.0),
            smtp_url=reader.url("EVENTBOOK_SMTP_URL", ("smtp", "smtps")),
            mail_from=reader.text("EVENTBOOK_MAIL_FROM", "eventbook@localhost"),
            claim_idle_ms=reader.integer("EVENTBOOK_CLAIM_IDLE_MS", 30000, 100, 86_400_000),
            max_attempts=reader.integer("EVENTBOOK_MAX_ATTEMPTS", 5, 1, 1000),
            fanout_concurrency=reader.integer("EVENTBOOK_FANOUT_CONCURRENCY", 500, 1, 10000),
            reconcile_interval_seconds=reader.integer(
                "EVENTBOOK_RECONCILE_INTERVAL_SECONDS", 30, 1, 86400
            ),
            reconcile_after_seconds=reader.integer(
                "EVENTBOOK_RECONCILE_AFTER_SECONDS", 300, 1, 30 * 86400
            ),
            actors=reader.names("EVENTBOOK_ACTORS"),
            webhook_allow_http=reader.boolean("EVENTBOOK_WEBHOOK_ALLOW_HTTP", False),
            webhook_allow_private=reader.boolean("EVENTBOOK_WEBHOOK_ALLOW_PRIVATE", False),
            webhook_timeout_seconds=reader.number(
                "EVENTBOOK_WEBHOOK_TIMEOUT_SECONDS", 10.0, 0.1, 120.0
            ),
            webhook_retry_schedule=reader.delays(
                "EVENTBOOK_WEBHOOK_RETRY_SCHEDULE", WEBHOOK_RETRY_SCHEDULE
            ),
            webhook_concurrency=reader.integer("EVENTBOOK_WEBHOOK_CONCURRENCY", 256, 1, 10_000),
            webhook_endpoint_concurrency=reader.integer(
                "EVENTBOOK_WEBHOOK_ENDPOINT_CONCURRENCY", 32, 1, 1000
            ),
            webhook_pause_after_failures=reader.integer(
                "EVENTBOOK_WEBHOOK_PAUSE_AFTER_FAILURES", 10, 1, 1_000_000
            ),
            webhook_pause_after_seconds=reader.integer(
                "EVENTBOOK_WEBHOOK_PAUSE_AFTER_SECONDS", 86400, 0, 365 * 86400
            ),
            webhook_secret_grace_seconds=reader.integer(
                "EVENTBOOK_WEBHOOK_SECRET_GRACE_SECONDS", 86400, 0, 30 * 86400
            ),
            webhook_retention_days=reader.integer(
                "EVENTBOOK_WEBHOOK_RETENTION_DAYS", 30, 1, 3650
            ),
        )
        config.validate()
        return config

    def validate(self) -> None:
        if self.db_pool_min > self.db_pool_max:
            raise ConfigError(
                "EVENTBOOK_DB_POOL_MIN must not exceed EVENTBOOK_DB_POOL_MAX "
                f"({self.db_pool_min} > {self.db_pool_max})"
            )
        if self.db_pooler == "transaction" and self.database_direct_url is None:
            raise ConfigError(
                "EVENTBOOK_DB_POOLER=transaction needs DATABASE_DIRECT_URL: the PostgreSQL "
                "server itself, not the pooler, for LISTEN and the migrations' lock"
            )
        if "{" in self.redis_prefix or "}" in self.redis_prefix:
            # A brace in the prefix would make it every key's hash tag: one cluster slot.
            raise ConfigError(
                f"EVENTBOOK_REDIS_PREFIX={self.redis_prefix!r} must not contain {{ or }}"
            )
        if self.jwt_secret is not None and len(self.jwt_secret.encode()) < 32:
            raise ConfigError("JWT_SECRET must be at least 32 bytes long")
        if self.metrics_token is not None and len(self.metrics_token.encode()) < 16:
            raise ConfigError("EVENTBOOK_METRICS_TOKEN must be at least 16 bytes long")
        if self.database_url is not None and self.jwt_secret is None:
            raise ConfigError(
                "JWT_SECRET is required when DATABASE_URL is set (at least 32 random bytes)"
            )

    @property
    def direct_url(self) -> str | None:
        """The PostgreSQL server itself, for what is bound to a session (LISTEN, a session
        advisory lock): DATABASE_URL may be a pooler that hands each transaction to any of
        its server connections."""
        return self.database_direct_url or self.database_url

    @property
    def pooled(self) -> bool:
        """DATABASE_URL is a pooler in transaction mode."""
        return self.db_pooler == "transaction"

    def replace(self, **changes: Any) -> Config:
        config = dataclasses.replace(self, **changes)
        config.validate()
        return config

    def redacted(self) -> dict[str, Any]:
        """The settings for the startup log, with secrets and URL passwords hidden."""
        shown: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in ("jwt_secret", "metrics_token"):
                value = None if value is None else "***"
            elif field.name in (
                "database_url", "database_direct_url", "database_read_url", "redis_url",
                "smtp_url",
            ) and value:
                value = redact_url(value)
            elif isinstance(value, Path):
                value = str(value)
            shown[field.name] = value
        return shown


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the system has one
    (a container's cpuset limits it), else every core."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def parse_processes(raw: str) -> int:
    """`auto` (one per usable core) or a count of server processes, 1 to 1024."""
    if raw.strip().lower() == "auto":
        return usable_cores()
    count = int(raw)
    if not 1 <= count <= 1024:
        raise ValueError(raw)
    return count


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def _parse_boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def optional(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def text(self, name: str, default: str) -> str:
        return self.optional(name) or default

    def _parse(self, name: str, default: Any, parse: Callable[[str], Any], expect: str) -> Any:
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            return parse(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not valid: expected {expect}") from None

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        def parse(raw: str) -> int:
            value = int(raw)
            if not low <= value <= high:
                raise ValueError
            return value

        return int(self._parse(name, default, parse, f"an integer from {low} to {high}"))

    def processes(self, name: str) -> int:
        return int(self._parse(name, 1, parse_processes, "a number from 1 to 1024, or auto"))

    def number(self, name: str, default: float, low: float, high: float) -> float:
        def parse(raw: str) -> float:
            value = float(raw)
            if not low <= value <= high:
                raise ValueError
            return value

        return float(self._parse(name, default, parse, f"a number from {low:g} to {high:g}"))

    def fraction(self, name: str, default: float) -> float:
        def parse(raw: str) -> float:
            value = float(raw)
            if not 0.0 <= value <= 1.0:
                raise ValueError
            return value

        return float(self._parse(name, default, parse, "a number from 0 to 1"))

    def boolean(self, name: str, default: bool) -> bool:
        return bool(self._parse(name, default, _parse_boolean, "true or false"))

    def tristate(self, name: str) -> bool | None:
        """True, False, or None when unset."""
        value = self._parse(name, None, _parse_boolean, "true or false")
        return None if value is None else bool(value)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        def parse(raw: str) -> str:
            if raw.lower() not in choices:
                raise ValueError
            return raw.lower()

        return str(self._parse(name, default, parse, " | ".join(choices)))

    def url(self, name: str, schemes: tuple[str, ...]) -> str | None:
        def parse(raw: str) -> str:
            parts = urlsplit(raw)
            if parts.scheme not in schemes or not (parts.netloc or parts.path):
                raise ValueError
            return raw

        expect = "a URL starting with " + " or ".join(f"{s}://" for s in schemes)
        value = self._parse(name, None, parse, expect)
        return None if value is None else str(value)

    def delays(self, name: str, default: tuple[float, ...]) -> tuple[float, ...]:
        """Comma-separated seconds, each from 0.01 to a week; at least one."""

        def parse(raw: str) -> tuple[float, ...]:
            values = tuple(float(part) for part in raw.split(","))
            if not values or not all(0.01 <= value <= 7 * 86400 for value in values):
                raise ValueError
            return values

        return tuple(self._parse(
            name, default, parse, "comma-separated seconds, each from 0.01 to 604800"
        ))

    def names(self, name: str) -> tuple[str, ...]:
        raw = self.optional(name)
        if raw is None:
            return ()
        return tuple(part.strip() for part in raw.split(",") if part.strip())
