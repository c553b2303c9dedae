"""Prometheus metrics: one registry per app or worker process, and the calls that feed it.

Every metric lives in the `Metrics` object the process creates (`create_app`, or the
worker), never in prometheus-client's global registry, so each test's app starts at
zero. Code that counts something calls one method on it:

    request.app[METRICS].booking_outcome("sold_out")     # in a handler
    self.metrics.mail_sent("booking_confirmed")          # in an actor given `metrics`

Gauges about shared state (the outbox backlog, stream lengths and lag) are not pushed,
nor are the waiting list's figures: offers are made inside the stored procedures that
give tickets back, wherever that happens, so they are counted where they are recorded,
in the waitlist_entries table. `refresh_forever`, a background task of the process,
reads them from PostgreSQL and Redis on an interval and then renders the whole registry
as text, in a thread; a scrape serves the last text. Rendering costs milliseconds of CPU
per hundred series (every route and status has a latency histogram), and reading the
gauges two queries and a round trip per stream: a scrape does neither, so however often
/metrics is asked for, neither the event loop, the database nor Redis does more. What a
scrape shows is then up to one interval old.

This module does not import aiohttp, so actors may use it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import asyncpg
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from eventbook import db, topics
from eventbook.connections import RedisClient
from eventbook.outages import POSTGRES_ERRORS, REDIS_ERRORS

log = structlog.get_logger(__name__)

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "WatchedStream"]

BOOKING_OUTCOMES = ("created", "sold_out", "not_bookable", "customer_limit", "replayed")
HOLD_EVENTS = ("created", "confirmed", "released", "expired")
RECONCILED_KINDS = ("confirmation", "offer", "announcement", "webhook", "dead_letter")
OUTBOX_TOPICS = topics.TOPICS
OUTBOX_BY_TOPIC = db.query("metrics_outbox_by_topic")
WAITLIST_BY_STATUS = db.query("metrics_waitlist_by_status")
WEBHOOK_BACKLOG = db.query("metrics_webhooks")
# What became of one webhook attempt: succeeded (2xx), failed (another attempt is
# scheduled), given_up (the last attempt of the schedule failed: the delivery failed).
WEBHOOK_RESULTS = ("succeeded", "failed", "given_up")
# From a change to its webhook's delivery: a second at best, a day of retries at worst.
WEBHOOK_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
                       7200.0, 36000.0, 86400.0)
WAITLIST_STATUSES = ("waiting", "offered", "accepted", "expired", "declined", "left",
                     "lapsed", "cancelled")
# The offers made, and those that ended in each of these statuses of their entry.
WAITLIST_OFFER_ENDS = ("accepted", "expired", "declined")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The route label of a request no route matched (404, 405): never the raw path, whose
# values are unbounded.
UNMATCHED = "unmatched"
# A refresh waits at most this long for PostgreSQL and for Redis; a source that does not
# answer in time reports eventbook_metrics_source_up 0 instead of stalling the refresh.
SCRAPE_TIMEOUT = 2.0
# Redis before 7 does not report a group's lag; it is then counted, up to this many.
LAG_COUNT_LIMIT = 10_000
# Where a browsing read went and why (eventbook.replica): to the replica (fresh), or to
# the primary because the replica lags, is unreachable, does not have the row, or the
# reader is the event's organizer.
READ_ROUTES = (
    ("replica", "fresh"), ("primary", "lagging"), ("primary", "unavailable"),
    ("primary", "missing"), ("primary", "owner"),
)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclasses.dataclass(frozen=True)
class WatchedStream:
    """A stream, the consumer group reading it, and where that group dead-letters."""

    stream: str
    group: str
    dead_letter: str | None = None


@dataclasses.dataclass
class StreamState:
    length: int = 0
    consumers: int = 0
    pending: int = 0
    lag: int = 0
    dead_letters: int = 0


@dataclasses.dataclass(frozen=True)
class WaitlistCounts:
    """Waiting-list entries by status, and offers made, as PostgreSQL counted them."""

    entries: dict[str, int]
    offers: int


@dataclasses.dataclass
class _Snapshot:
    """What the last refresh read from PostgreSQL and Redis."""

    outbox_backlog: dict[str, int] = dataclasses.field(default_factory=dict)
    outbox_oldest_seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    streams: dict[WatchedStream, StreamState] = dataclasses.field(default_factory=dict)
    # None until PostgreSQL first answered; then what it last answered (see _read_waitlist).
    waitlist: WaitlistCounts | None = None
    # Webhook deliveries pending and due now, the age of the oldest due, paused endpoints.
    webhooks: asyncpg.Record | None = None
    up: dict[str, int] = dataclasses.field(default_factory=dict)


class _SnapshotCollector(Collector):
    """Yields the gauges of the last snapshot, which `Metrics.refresh` replaces."""

    def __init__(self) -> None:
        self.snapshot = _Snapshot()

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        backlog = GaugeMetricFamily(
            "eventbook_outbox_backlog",
            "Outbox rows written but not yet relayed to Redis, by topic.",
            labels=["topic"],
        )
        oldest = GaugeMetricFamily(
            "eventbook_outbox_oldest_age_seconds",
            "Age of the oldest outbox row not yet relayed, by topic (0 when empty).",
            labels=["topic"],
        )
        for topic in sorted(snap.outbox_backlog):
            backlog.add_metric([topic], snap.outbox_backlog[topic])
            oldest.add_metric([topic], snap.outbox_oldest_seconds.get(topic, 0.0))
        length = GaugeMetricFamily(
            "eventbook_stream_length", "Entries in the stream (XLEN).", labels=["stream", "group"]
        )
        pending = GaugeMetricFamily(
            "eventbook_stream_pending",
            "Entries delivered to the group's consumers and not yet acknowledged.",
            labels=["stream", "group"],
        )
        lag = GaugeMetricFamily(
            "eventbook_stream_lag",
            "Entries in the stream not yet delivered to the group.",
            labels=["stream", "group"],
        )
        dead = GaugeMetricFamily(
            "eventbook_dead_letters",
            "Entries in the group's dead-letter stream: given up on, waiting for an operator.",
            labels=["stream", "group"],
        )
        for watched, state in snap.streams.items():
            labels = [watched.stream, watched.group]
            length.add_metric(labels, state.length)
            pending.add_metric(labels, state.pending)
            lag.add_metric(labels, state.lag)
            dead.add_metric(labels, state.dead_letters)
        up = GaugeMetricFamily(
            "eventbook_metrics_source_up",
            "1 when the last refresh could read this source (postgres, redis), else 0.",
            labels=["source"],
        )
        for source, value in sorted(snap.up.items()):
            up.add_metric([source], value)
        yield from (backlog, oldest, length, pending, lag, dead, up)
        yield from _waitlist_families(snap.waitlist)
        yield from _webhook_families(snap.webhooks)


def _webhook_families(row: asyncpg.Record | None) -> Iterator[Metric]:
    pending = GaugeMetricFamily(
        "eventbook_webhook_deliveries_pending",
        "Webhook deliveries not yet succeeded nor given up on, of every endpoint: all of"
        " them, and those due now (their next attempt's time has come).",
        labels=["state"],
    )
    oldest = GaugeMetricFamily(
        "eventbook_webhook_oldest_due_seconds",
        "How long the oldest due webhook delivery of an enabled endpoint has been due"
        " (0 when none is): the dispatchers' backlog.",
    )
    paused = GaugeMetricFamily(
        "eventbook_webhook_endpoints_paused",
        "Webhook endpoints paused, by reason: owner (by its organizer), failing.",
        labels=["reason"],
    )
    failed = GaugeMetricFamily(
        "eventbook_webhook_deliveries_failed",
        "Webhook deliveries given up on (every attempt of the schedule failed): they wait"
        " for their endpoint's owner to retry them.",
    )
    if row is not None:
        pending.add_metric(["all"], row["pending"])
        pending.add_metric(["due"], row["due"])
        oldest.add_metric([], row["oldest_due_seconds"])
        paused.add_metric(["owner"], row["paused_by_owner"])
        paused.add_metric(["failing"], row["paused_failing"])
        failed.add_metric([], row["failed"])
    yield from (pending, oldest, paused, failed)


def _waitlist_families(counts: WaitlistCounts | None) -> Iterator[Metric]:
    """The waiting list's figures; families without samples before the first read."""
    entries = GaugeMetricFamily(
        "eventbook_waitlist_entries",
        "Waiting-list entries of every event by status: waiting, offered (a hold in the"
        " customer's name), accepted, expired, declined, left, cancelled.",
        labels=["status"],
    )
    joined = CounterMetricFamily(
        "eventbook_waitlist_joined", "Waiting-list entries ever made, of every event."
    )
    offers = CounterMetricFamily(
        "eventbook_waitlist_offers",
        "Waiting-list offers: made (a hold offered to the next in line), and those that"
        " ended accepted (confirmed into a booking), expired or declined (released, or the"
        " customer left the list); each of these moves to the next in line.",
        labels=["outcome"],
    )
    if counts is not None:
        for status in WAITLIST_STATUSES:
            entries.add_metric([status], counts.entries.get(status, 0))
        joined.add_metric([], sum(counts.entries.values()))
        offers.add_metric(["made"], counts.offers)
        for status in WAITLIST_OFFER_ENDS:
            offers.add_metric([status], counts.entries.get(status, 0))
    yield from (entries, joined, offers)


class Metrics:
    """Every metric one process exposes, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.http_requests = Counter(
            "eventbook_http_requests",
            "HTTP requests answered, by method, route (its pattern, not the raw path) and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "eventbook_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.bookings = Counter(
            "eventbook_bookings",
            "Booking requests by outcome: created, sold_out, not_bookable (cancelled or past"
            " event), customer_limit (the customer's cap for the event reached), replayed (a"
            " retry with a known Idempotency-Key answered the same booking).",
            ["outcome"],
            registry=registry,
        )
        self.holds = Counter(
            "eventbook_holds",
            "Checkout holds by what happened to them: created, confirmed (into a booking),"
            " released (by the customer), expired (by the holds actor in this process).",
            ["event"],
            registry=registry,
        )
        self.actor_restarts = Counter(
            "eventbook_actor_restarts",
            "Times the supervisor restarted an actor after it crashed or returned.",
            ["actor"],
            registry=registry,
        )
        self.mails = Counter(
            "eventbook_mails",
            "Mails handed to the mail server, by notification kind and result (sent, failed).",
            ["kind", "result"],
            registry=registry,
        )
        self.fanout_recipients = Counter(
            "eventbook_fanout_recipients",
            "Attendees the notifications fan-out has handled, by notification kind.",
            ["kind"],
            registry=registry,
        )
        self.fanout_active = Gauge(
            "eventbook_fanout_in_progress",
            "Event changes whose attendees are being notified right now.",
            registry=registry,
        )
        self.reconciled_work = Counter(
            "eventbook_reconciled",
            "Work the reconciler put back after a store lost it, by kind: confirmation (a"
            " booking's confirmation requeued), offer (a waiting-list offer's mail requeued),"
            " announcement (an event change resumed), webhook (a change's webhook message"
            " requeued),"
            " dead_letter (a message an outage made fail, replayed).",
            ["kind"],
            registry=registry,
        )
        self.webhook_attempts = Counter(
            "eventbook_webhook_attempts",
            "Webhook attempts made by this process, by result: succeeded (2xx in time),"
            " failed (another attempt is scheduled), given_up (the schedule's last attempt"
            " failed).",
            ["result"],
            registry=registry,
        )
        self.webhook_lag = Histogram(
            "eventbook_webhook_delivery_lag_seconds",
            "From a change (its outbox row) to its webhook's successful delivery, retries"
            " included.",
            buckets=WEBHOOK_LAG_BUCKETS,
            registry=registry,
        )
        self.browse_reads = Counter(
            "eventbook_browse_reads",
            "Reads of events with a read replica configured, by the server they went to"
            " (source) and why: fresh (the replica within EVENTBOOK_READ_MAX_LAG_SECONDS),"
            " lagging, unavailable, missing (the replica lacked the event) or owner (the"
            " event's organizer reads its own).",
            ["source", "reason"],
            registry=registry,
        )
        self.replica_lag = Gauge(
            "eventbook_replica_lag_seconds",
            "How far behind the primary the read replica is, as this process last measured"
            " it: the age of the newest primary WAL position the replica has replayed (an"
            " upper bound, within the sampling interval).",
            registry=registry,
        )
        self.replica_up = Gauge(
            "eventbook_replica_up",
            "1 when the read replica answered this process's last lag sample, else 0.",
            registry=registry,
        )
        for result in WEBHOOK_RESULTS:
            self.webhook_attempts.labels(result)
        for outcome in BOOKING_OUTCOMES:
            self.bookings.labels(outcome)
        for kind in RECONCILED_KINDS:
            self.reconciled_work.labels(kind)
        for event in HOLD_EVENTS:
            self.holds.labels(event)
        self.watched: set[WatchedStream] = set()
        self._snapshot = _SnapshotCollector()
        registry.register(self._snapshot)
        self._rendered: bytes | None = None

    # -- what other modules call -------------------------------------------------------

    def observe_request(self, method: str, route: str | None, status: int, seconds: float) -> None:
        """One answered HTTP request; `route` is the matched route's pattern or None."""
        labels = (
            method if method in HTTP_METHODS else "other",
            route or UNMATCHED,
            str(status),
        )
        self.http_requests.labels(*labels).inc()
        self.http_duration.labels(*labels).observe(seconds)

    def booking_outcome(self, outcome: str) -> None:
        """One booking request's outcome: one of BOOKING_OUTCOMES."""
        if outcome not in BOOKING_OUTCOMES:
            raise ValueError(f"unknown booking outcome {outcome!r}")
        self.bookings.labels(outcome).inc()

    def hold_event(self, event: str, count: int = 1) -> None:
        """Holds created, confirmed, released or expired: one of HOLD_EVENTS."""
        if event not in HOLD_EVENTS:
            raise ValueError(f"unknown hold event {event!r}")
        self.holds.labels(event).inc(count)

    def actor_restarted(self, actor: str) -> None:
        self.actor_restarts.labels(actor).inc()

    def mail_sent(self, kind: str) -> None:
        self.mails.labels(kind, "sent").inc()

    def mail_failed(self, kind: str) -> None:
        self.mails.labels(kind, "failed").inc()

    def fanout_progress(self, kind: str, recipients: int) -> None:
        """`recipients` more attendees of a `kind` change handled (one page or batch)."""
        self.fanout_recipients.labels(kind).inc(recipients)

    def fanout_running(self) -> AbstractContextManager[Any]:
        """`with metrics.fanout_running(): ...` around the expansion of one event change."""
        return self.fanout_active.track_inprogress()

    def reconciled(self, kind: str, count: int = 1) -> None:
        """The reconciler put back `count` items of `kind` (see RECONCILED_KINDS)."""
        if kind not in RECONCILED_KINDS:
            raise ValueError(f"unknown reconciled kind {kind!r}")
        self.reconciled_work.labels(kind).inc(count)

    def webhook_attempt(self, result: str, lag_seconds: float | None = None) -> None:
        """One webhook attempt's result (WEBHOOK_RESULTS); a success with its lag."""
        if result not in WEBHOOK_RESULTS:
            raise ValueError(f"unknown webhook result {result!r}")
        self.webhook_attempts.labels(result).inc()
        if lag_seconds is not None:
            self.webhook_lag.observe(max(0.0, lag_seconds))

    def browse_read(self, source: str, reason: str) -> None:
        """One read of events with a replica configured: one of READ_ROUTES."""
        if (source, reason) not in READ_ROUTES:
            raise ValueError(f"unknown read route {source!r}, {reason!r}")
        self.browse_reads.labels(source, reason).inc()

    def replica_measured(self, up: bool, lag_seconds: float) -> None:
        """The replica's state after a lag sample (lag: inf when never caught up)."""
        self.replica_up.set(1 if up else 0)
        self.replica_lag.set(lag_seconds)

    def watch_stream(self, stream: str, group: str, dead_letter: str | None = None) -> None:
        """Report this stream's length, the group's pending and lag, and its dead letters."""
        self.watched.add(WatchedStream(stream, group, dead_letter))

    # -- the gauges of shared state ---------------------------------------------------

    async def refresh_forever(
        self, pool: asyncpg.Pool | None, client: RedisClient | None, interval: float
    ) -> None:
        """Refresh now, then every `interval` seconds, until cancelled."""
        while True:
            try:
                await self.refresh(pool, client)
            except Exception:
                # Sources that fail are reported by refresh; anything else must not stop
                # the gauges for good.
                log.exception("metrics_refresh_failed")
            await asyncio.sleep(interval)

    async def refresh(self, pool: asyncpg.Pool | None, client: RedisClient | None) -> None:
        """Read the outbox, waiting-list and stream figures now (each source within
        SCRAPE_TIMEOUT), then render the registry for the scrapes to come."""
        snapshot = _Snapshot()
        jobs = []
        if pool is not None:
            jobs.append(self._read_postgres(pool, snapshot))
        if client is not None:
            jobs.append(self._read_streams(client, snapshot))
        await asyncio.gather(*jobs)
        self._snapshot.snapshot = snapshot
        # In a thread: the event loop keeps answering requests while the text is built.
        self._rendered = await asyncio.to_thread(generate_latest, self.registry)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format as the last refresh rendered it (serve
        with CONTENT_TYPE_LATEST); rendered now only before the first refresh is done."""
        if self._rendered is None:
            self._rendered = generate_latest(self.registry)
        return self._rendered

    async def _read_postgres(self, pool: asyncpg.Pool, snapshot: _Snapshot) -> None:
        snapshot.outbox_backlog = dict.fromkeys(OUTBOX_TOPICS, 0)
        snapshot.outbox_oldest_seconds = dict.fromkeys(OUTBOX_TOPICS, 0.0)
        # The waiting list's counters go on showing what was last read rather than zero:
        # a counter that fell to zero and rose back would read as a burst of offers.
        snapshot.waitlist = self._snapshot.snapshot.waitlist
        snapshot.webhooks = self._snapshot.snapshot.webhooks
        try:
            rows, waitlist, webhooks = await asyncio.wait_for(
                self._fetch_postgres(pool), SCRAPE_TIMEOUT
            )
        except POSTGRES_ERRORS as exc:
            log.warning("metrics_source_unavailable", source="postgres", error=repr(exc))
            snapshot.up["postgres"] = 0
            return
        snapshot.waitlist = WaitlistCounts(
            entries={row["status"]: row["entries"] for row in waitlist},
            offers=sum(row["offers"] for row in waitlist),
        )
        snapshot.webhooks = webhooks
        for row in rows:
            snapshot.outbox_backlog[row["topic"]] = row["backlog"]
            snapshot.outbox_oldest_seconds[row["topic"]] = max(0.0, row["oldest"] or 0.0)
        snapshot.up["postgres"] = 1

    @staticmethod
    async def _fetch_postgres(
        pool: asyncpg.Pool,
    ) -> tuple[list[asyncpg.Record], list[asyncpg.Record], asyncpg.Record | None]:
        async with pool.acquire(timeout=SCRAPE_TIMEOUT) as conn:
            outbox = await conn.fetch(OUTBOX_BY_TOPIC, timeout=SCRAPE_TIMEOUT)
            waitlist = await conn.fetch(WAITLIST_BY_STATUS, timeout=SCRAPE_TIMEOUT)
            webhooks = await conn.fetchrow(WEBHOOK_BACKLOG, timeout=SCRAPE_TIMEOUT)
        return outbox, waitlist, webhooks

    async def _read_streams(self, client: RedisClient, snapshot: _Snapshot) -> None:
        watched = sorted(self.watched, key=lambda w: (w.stream, w.group))
        try:
            states = await asyncio.wait_for(
                asyncio.gather(*(stream_state(client, w) for w in watched)),
                SCRAPE_TIMEOUT,
            )
        except REDIS_ERRORS as exc:
            log.warning("metrics_source_unavailable", source="redis", error=repr(exc))
            snapshot.up["redis"] = 0
            return
        snapshot.streams = dict(zip(watched, states, strict=True))
        snapshot.up["redis"] = 1


async def stream_state(client: RedisClient, watched: WatchedStream) -> StreamState:
    """The stream's length and dead letters, and its group's consumers, pending and lag
    (for the scrape, and for `eventbook queues`)."""
    state = StreamState()
    state.length = await client.xlen(watched.stream)
    if watched.dead_letter is not None:
        state.dead_letters = await client.xlen(watched.dead_letter)
    if state.length == 0 and not await client.exists(watched.stream):
        return state
    groups = await client.xinfo_groups(watched.stream)
    group = next((g for g in groups if g["name"] == watched.group), None)
    if group is None:
        # No consumer has created the group yet: everything in the stream waits for it.
        state.lag = state.length
        return state
    state.consumers = int(group["consumers"])
    state.pending = int(group["pending"])
    if group.get("lag") is not None:
        state.lag = int(group["lag"])
    else:
        last = group["last-delivered-id"]
        entries = await client.xrange(watched.stream, f"({last}", "+", count=LAG_COUNT_LIMIT)
        state.lag = len(entries or [])
    return state
