"""The webhooks actor: organizers' endpoints hear of bookings, holds and event changes.

Two parts, run together by `Webhooks`:

- `WebhookFanout` reads the stream `webhooks` (outbox rows the stored procedures write,
  in the transaction of the change, when the organizer has an endpoint that wants it).
  For each message it builds the body once (the object as the API returns it) and
  records one delivery per endpoint that wants it (webhook_deliveries, unique per
  endpoint and message, so a redelivered message adds nothing), then acknowledges.
  The messages in hand at once are read and recorded together, one statement each.
- `Dispatcher` sends the deliveries that are due. The deliveries table is the schedule:
  a failed attempt sets the next one's time (EVENTBOOK_WEBHOOK_RETRY_SCHEDULE, with
  jitter), so retries survive restarts and are spread over about a day. A taken
  delivery's next_attempt_at is a lease: if the worker dies mid-attempt, the delivery is
  due again once the lease runs out (at least once). Attempts in flight are bounded per
  endpoint and in all, so a slow endpoint holds only its own share.

Each attempt is a POST signed the Standard Webhooks way (webhook-id, webhook-timestamp,
webhook-signature; the `standardwebhooks` library signs), not following redirects, to
an address checked at connection time (eventbook.webhook_urls), reading at most
RESPONSE_LIMIT bytes of the answer. A 2xx within EVENTBOOK_WEBHOOK_TIMEOUT_SECONDS is
success; anything else is a failed attempt.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import functools
import random
import time
import uuid
from typing import Any

import aiohttp
import asyncpg
import structlog
from standardwebhooks import Webhook

from eventbook import db, topics
from eventbook.actors.mailer import Mailer
from eventbook.actors.stream import Message, StreamActor, pause
from eventbook.coalescer import Coalescer
from eventbook.config import Config
from eventbook.connections import RedisClient
from eventbook.metrics import Metrics
from eventbook.outages import Availability, is_outage, postgres_writable
from eventbook.webhook_payloads import EVENT_TYPES, build_bodies
from eventbook.webhook_urls import GuardedResolver, check_delivery_url, describe

log = structlog.get_logger(__name__)

FANOUT = db.query("webhook_fanout")
CLAIM = db.query("webhook_claim")
SUCCEEDED = db.query("webhook_succeeded")
FAILED = db.query("webhook_failed")
PAUSE_NOTICE = db.query("webhook_pause_notice")
PAUSE_NOTIFIED = db.query("webhook_pause_notified")
PURGE = db.query("webhook_purge")

# The most of an answer's body read; the rest is not waited for.
RESPONSE_LIMIT = 4096
# A lease outlasts an attempt's timeout by this much, for recording its result.
LEASE_MARGIN_SECONDS = 5.0
USER_AGENT = "eventbook-webhooks/1"
# After a wake-up, how long the dispatcher lets more deliveries become due and more
# attempts end before it looks: one claim for many, at the cost of this much lag.
GATHER_SECONDS = 0.005
# Successes recorded in one statement, at most.
RECORD_BATCH = 500
# How often old deliveries are deleted, and at most how many per statement.
PURGE_INTERVAL_SECONDS = 300.0
PURGE_BATCH = 5000


def retry_in(config: Config, attempts: int) -> float | None:
    """Seconds until the next attempt after `attempts` failed ones (None: give up),
    with +-20% jitter so that deliveries failed together do not return together."""
    schedule = config.webhook_retry_schedule
    if attempts > len(schedule):
        return None
    return schedule[attempts - 1] * random.uniform(0.8, 1.2)


def sign(secrets: list[str], msg_id: str, at: dt.datetime, body: str) -> str:
    """The webhook-signature header: one v1 signature per secret, space-separated, so a
    receiver still verifying with the previous secret after a rotation accepts it."""
    return " ".join(Webhook(secret).sign(msg_id, at, body) for secret in secrets)


@dataclasses.dataclass(frozen=True)
class Change:
    """A webhooks message to fan out; `recorded` is answered once its deliveries are."""

    kind: str
    payload: dict[str, Any]
    occurred_at: dt.datetime
    recorded: asyncio.Future[None]


class WebhookFanout(StreamActor):
    """Turns each webhooks message into one delivery per endpoint that wants it, and
    mails an endpoint's owner when it was paused for failing."""

    name = topics.WEBHOOKS
    topic = topics.WEBHOOKS
    concurrency = 32

    def __init__(
        self, config: Config, pool: asyncpg.Pool, client: RedisClient, mailer: Mailer,
        wake: asyncio.Event, **options: Any,
    ) -> None:
        super().__init__(config, client, probes=[lambda: postgres_writable(pool)], **options)
        self.pool = pool
        self.mailer = mailer
        self.wake = wake
        # Messages handled at the same time are fanned out together (up to all in hand).
        self.changes: Coalescer[Change] = Coalescer(
            self._fan_out, lambda change: change.recorded, self.concurrency
        )

    async def handle(self, message: Message) -> None:
        kind = message.kind
        if kind == "endpoint.paused":
            await self._tell_owner(message.payload)
            return
        if kind not in EVENT_TYPES:
            log.warning("webhook_kind_unknown", kind=kind)
            return
        change = Change(kind, message.payload,
                        dt.datetime.fromisoformat(message.fields["created_at"]),
                        asyncio.get_running_loop().create_future())
        self.changes.submit(change)
        await change.recorded

    async def _fan_out(self, batch: list[Change]) -> None:
        """Record the deliveries of the changes that arrived together: the objects read
        and the deliveries inserted in one statement each, for all of them."""
        built = await build_bodies(
            self.pool, [(change.kind, change.payload, change.occurred_at) for change in batch]
        )
        ready = [b for b in built if b is not None]
        made: list[asyncpg.Record] = []
        if ready:
            made = await self.pool.fetch(
                FANOUT, [b.organizer_id for b in ready], [b.event_id for b in ready],
                [b.message_id for b in ready], [b.kind for b in ready],
                [b.body for b in ready], [b.occurred_at for b in ready],
            )
        if made:
            self.wake.set()
        deliveries = collections.Counter(row["message_id"] for row in made)
        for change, webhook in zip(batch, built, strict=True):
            if webhook is None:
                log.warning("webhook_object_missing", kind=change.kind, payload=change.payload)
            if not change.recorded.done():
                change.recorded.set_result(None)
        log.info("webhooks_fanned_out", messages=len(batch), deliveries=sum(deliveries.values()))

    async def _tell_owner(self, payload: dict[str, Any]) -> None:
        endpoint_id = uuid.UUID(str(payload["endpoint_id"]))
        paused_at = dt.datetime.fromisoformat(str(payload["paused_at"]))
        row = await self.pool.fetchrow(PAUSE_NOTICE, endpoint_id, paused_at)
        if row is None:
            return
        body = (
            f"Hello {row['name']},\n\n"
            f"Your webhook endpoint {row['url']} failed {row['consecutive_failures']} times"
            f" in a row since {row['failing_since']:%Y-%m-%d %H:%M UTC}, so it is paused:"
            " nothing more is sent to it. Its messages are kept and wait for it.\n\n"
            "Once it answers again, enable it (PATCH /api/v1/webhooks/"
            f"{endpoint_id} with {{\"status\": \"enabled\"}}), and retry any delivery that"
            " failed for good (POST /api/v1/webhooks/{id}/deliveries/{delivery}/retry).\n\n"
            f"Endpoint: {endpoint_id}\n"
        )
        await self.mailer.send(row["email"], "Your webhook endpoint is paused", body)
        await self.pool.execute(PAUSE_NOTIFIED, endpoint_id, paused_at)
        log.info("webhook_pause_mailed", endpoint_id=str(endpoint_id))


@dataclasses.dataclass(frozen=True)
class Success:
    """A 2xx answer to record; `recorded` gives the delivery's lag (None: it was no
    longer pending)."""

    delivery_id: uuid.UUID
    status: int
    recorded: asyncio.Future[float | None]


class Dispatcher:
    """Sends due deliveries, at most `webhook_concurrency` at once and
    `webhook_endpoint_concurrency` to one endpoint."""

    name = "webhook_dispatcher"

    def __init__(
        self, config: Config, pool: asyncpg.Pool, metrics: Metrics, wake: asyncio.Event,
        *, poll_interval: float = 0.5,
    ) -> None:
        self.config = config
        self.pool = pool
        self.metrics = metrics
        self.wake = wake
        self.poll_interval = poll_interval
        self.availability = Availability([lambda: postgres_writable(pool)])
        self.in_flight: dict[uuid.UUID, int] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.slot_freed = asyncio.Event()
        self.next_purge = 0.0
        # Successes that end together are recorded together, one statement at a time.
        self.successes: Coalescer[Success] = Coalescer(
            self._record_successes, lambda success: success.recorded, RECORD_BATCH
        )

    async def run(self, stopping: asyncio.Event) -> None:
        """Deliver until `stopping`; the attempts in flight finish and are recorded."""
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(allow_private=self.config.webhook_allow_private),
            # Every new connection resolves its host again, through the guard.
            use_dns_cache=False,
            limit=self.config.webhook_concurrency,
            limit_per_host=self.config.webhook_endpoint_concurrency,
        )
        async with aiohttp.ClientSession(
            connector=connector, auto_decompress=False, trust_env=False,
            headers={"User-Agent": USER_AGENT},
        ) as session:
            try:
                while not stopping.is_set():
                    # Cleared before looking, so a wake-up that comes while looking
                    # is not lost.
                    self.wake.clear()
                    self.slot_freed.clear()
                    try:
                        await self.purge_old()
                        taken = await self.dispatch(session, stopping)
                    except Exception as exc:
                        if not is_outage(exc):
                            raise
                        log.warning("webhooks_waiting_for_postgres", error=repr(exc))
                        await self.availability.wait(stopping)
                        continue
                    if not taken and await pause(
                        self.poll_interval, self.wake, self.slot_freed, stopping
                    ):
                        await asyncio.sleep(GATHER_SECONDS)
            finally:
                if self.tasks:
                    await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.availability.close()

    async def dispatch(self, session: aiohttp.ClientSession, stopping: asyncio.Event) -> int:
        """Start attempts for the deliveries due now, as far as the bounds allow; return
        how many started."""
        free = self.config.webhook_concurrency - len(self.tasks)
        if free <= 0:
            return 0
        busy = list(self.in_flight)
        rows = await self.pool.fetch(
            CLAIM, free, busy, [self.in_flight[e] for e in busy],
            self.config.webhook_endpoint_concurrency,
            self.config.webhook_timeout_seconds + LEASE_MARGIN_SECONDS,
        )
        for row in rows:
            endpoint = row["endpoint_id"]
            self.in_flight[endpoint] = self.in_flight.get(endpoint, 0) + 1
            task = asyncio.create_task(self.attempt(session, row, stopping))
            self.tasks.add(task)
            task.add_done_callback(functools.partial(self._finished, endpoint))
        return len(rows)

    async def _record_successes(self, batch: list[Success]) -> None:
        rows = await self.pool.fetch(
            SUCCEEDED, [s.delivery_id for s in batch], [s.status for s in batch]
        )
        lags = {row["id"]: row["lag_seconds"] for row in rows}
        for success in batch:
            if not success.recorded.done():
                success.recorded.set_result(lags.get(success.delivery_id))

    async def purge_old(self) -> None:
        """Now and then, delete deliveries over for longer than the retention period."""
        if time.monotonic() < self.next_purge:
            return
        self.next_purge = time.monotonic() + PURGE_INTERVAL_SECONDS
        while True:
            deleted = await self.pool.fetchval(
                PURGE, float(self.config.webhook_retention_days) * 86400, PURGE_BATCH
            )
            if deleted:
                log.info("webhook_deliveries_purged", count=deleted)
            if deleted < PURGE_BATCH:
                return

    def _finished(self, endpoint: uuid.UUID, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        left = self.in_flight[endpoint] - 1
        if left:
            self.in_flight[endpoint] = left
        else:
            del self.in_flight[endpoint]
        self.slot_freed.set()

    async def attempt(
        self, session: aiohttp.ClientSession, row: asyncpg.Record, stopping: asyncio.Event
    ) -> None:
        """One attempt of one delivery, and its result recorded."""
        with structlog.contextvars.bound_contextvars(
            delivery_id=str(row["id"]), endpoint_id=str(row["endpoint_id"]),
            webhook_message_id=row["message_id"],
        ):
            started = time.perf_counter()
            status, error = await self.post(session, row)
            elapsed = round((time.perf_counter() - started) * 1000, 2)
            while True:
                try:
                    await self.record(row, status, error, elapsed)
                    return
                except Exception as exc:
                    if not is_outage(exc):
                        log.exception("webhook_result_not_recorded", error=repr(exc))
                        return
                    # The lease would make it due again: wait and record it instead.
                    if not await self.availability.wait(stopping):
                        return

    async def post(
        self, session: aiohttp.ClientSession, row: asyncpg.Record
    ) -> tuple[int | None, str | None]:
        """POST the delivery: (status, None) for a 2xx, else (status or None, why)."""
        secrets = [row["secret"]] + ([row["previous_secret"]] if row["previous_secret"] else [])
        now = dt.datetime.now(dt.UTC)
        body: str = row["body"]
        headers = {
            "Content-Type": "application/json",
            "webhook-id": row["message_id"],
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": sign(secrets, row["message_id"], now, body),
        }
        try:
            check_delivery_url(
                row["url"], allow_http=self.config.webhook_allow_http,
                allow_private=self.config.webhook_allow_private,
            )
            async with asyncio.timeout(self.config.webhook_timeout_seconds):
                async with session.post(
                    row["url"], data=body.encode(), headers=headers, allow_redirects=False,
                ) as response:
                    with contextlib.suppress(aiohttp.ClientError):
                        await response.content.read(RESPONSE_LIMIT)
                    status = response.status
        except TimeoutError:
            return None, f"no answer within {self.config.webhook_timeout_seconds:g} s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return None, describe(exc)
        if 200 <= status < 300:
            return status, None
        return status, f"answered {status}"

    async def record(
        self, row: asyncpg.Record, status: int | None, error: str | None, elapsed_ms: float
    ) -> None:
        if error is None:
            assert status is not None
            success = Success(row["id"], status, asyncio.get_running_loop().create_future())
            self.successes.submit(success)
            lag = await success.recorded
            self.metrics.webhook_attempt("succeeded", lag)
            log.info("webhook_delivered", status=status, attempts=row["attempts"],
                     duration_ms=elapsed_ms, event_type=row["event_type"])
            return
        delay = retry_in(self.config, row["attempts"])
        result = await self.pool.fetchrow(
            FAILED, row["id"], status, error, delay,
            self.config.webhook_pause_after_failures, self.config.webhook_pause_after_seconds,
        )
        assert result is not None
        self.metrics.webhook_attempt("failed" if delay is not None else "given_up")
        log.warning("webhook_attempt_failed", status=status, error=error,
                    attempts=row["attempts"], duration_ms=elapsed_ms,
                    outcome=result["outcome"],
                    retry_in_s=None if delay is None else round(delay, 3))
        if result["paused"]:
            log.error("webhook_endpoint_paused", failures=self.config.webhook_pause_after_failures)


class Webhooks:
    """The fan-out and the dispatcher, run and stopped together. A delivery recorded by
    the fan-out wakes this process's dispatcher at once; other processes' dispatchers
    find it within their poll interval."""

    name = "webhooks"

    def __init__(
        self, config: Config, pool: asyncpg.Pool, client: RedisClient, mailer: Mailer,
        metrics: Metrics,
    ) -> None:
        wake = asyncio.Event()
        self.fanout = WebhookFanout(config, pool, client, mailer, wake, metrics=metrics)
        self.dispatcher = Dispatcher(config, pool, metrics, wake)

    async def run(self, stopping: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.fanout.run(stopping))
            group.create_task(self.dispatcher.run(stopping))
