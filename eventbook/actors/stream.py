"""The consumer-group runtime every stream actor shares.

A `StreamActor` reads one Redis Stream through its consumer group, handles up to
`concurrency` messages at a time, and acknowledges each once `handle` returned.
Delivery is at least once, so `handle` must be idempotent.

Two kinds of failure are told apart. When a dependency is down (PostgreSQL, Redis or
the mail server unreachable or refusing writes: `eventbook.outages`), the message is
not at fault: it stays in hand, the actor waits until the dependencies answer again
(one probe loop, capped backoff) and tries it again, and nothing is counted. A failure
with the dependencies healthy is the message's own: it is counted in Redis
(`{prefix}{topic}:failures`), retried with backoff, and after `max_attempts` such
failures the message goes to the dead-letter stream `{prefix}{topic}:dead` with its
error, attempts and `cause`.

Messages in hand are kept claimed (XCLAIM JUSTID, which does not count a delivery), so
a message waiting out an outage or a slow page is not taken by another consumer.
Messages a dead consumer left pending are claimed again (XAUTOCLAIM) after
`claim_idle_ms`; one delivered `delivery_limit` times without ever finishing (its
consumers keep dying on it) is dead-lettered too.

A consumer is registered in its group when its actor starts (Redis would otherwise
list it only once it is handed a message) and keeps a heartbeat key alive while it
runs. Consumers of processes that are gone (no heartbeat, silent for `gone_after_ms`,
holding no pending message) are removed from the group, so operators see the live ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import random
import secrets
import socket
import time
from collections.abc import Mapping
from typing import Any

import redis.exceptions
import structlog
from redis.typing import EncodableT, StreamIdT

from eventbook.coalescer import Coalescer
from eventbook.config import Config
from eventbook.connections import RedisClient, is_cluster
from eventbook.metrics import Metrics
from eventbook.outages import REDIS_ERRORS, Availability, Probe, is_outage, redis_writable

log = structlog.get_logger(__name__)


# Lua: the error a write answered, as the command alone answers it (Redis 6 prefixes
# the script's line), or nil when it worked.
WRITE_ERROR = """
local function write_error(reply)
    if type(reply) == 'table' and reply.err then
        return {err = (string.gsub(reply.err, '^@user_script: %d+: %-', ''))}
    end
end
"""


def topic_tag(prefix: str, topic: str) -> str:
    """The start of every key of `topic`: its name in braces is the keys' Redis Cluster
    hash tag, so a topic's stream, dead letters, failure counts and heartbeats share one
    slot and every transaction or script over them runs on one node. (The prefix holds
    no braces: config.validate refuses them.)"""
    return f"{prefix}{{{topic}}}:"


def stream_key(prefix: str, topic: str) -> str:
    return f"{topic_tag(prefix, topic)}stream"


def dead_letter_key(prefix: str, topic: str) -> str:
    return f"{topic_tag(prefix, topic)}dead"


def failures_key(prefix: str, topic: str) -> str:
    """Hash of message id -> failures that were the message's own, while it is pending."""
    return f"{topic_tag(prefix, topic)}failures"


def heartbeat_key(prefix: str, topic: str, consumer: str) -> str:
    """Exists while `consumer` runs: Redis's own idle time is no sign of life, since
    (before Redis 7.2) a read that finds nothing does not reset it."""
    return f"{topic_tag(prefix, topic)}consumer:{consumer}"


def legacy_keys(prefix: str, topic: str) -> list[tuple[str, str]]:
    """(name before hash tags, name now) of each lasting key of `topic`; heartbeats
    expire on their own and are left out."""
    return [
        (f"{prefix}stream:{topic}", stream_key(prefix, topic)),
        (f"{prefix}dead:{topic}", dead_letter_key(prefix, topic)),
        (f"{prefix}failures:{topic}", failures_key(prefix, topic)),
    ]


# Renames KEYS[1] to KEYS[2] when the first exists and the second does not: 1 renamed,
# 0 nothing to rename, -1 both exist. One script, so processes starting together rename
# once and none overwrites a key another already wrote. RENAME keeps a stream's consumer
# groups and pending entries.
RENAME_LEGACY = WRITE_ERROR + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local renamed = redis.pcall('RENAME', KEYS[1], KEYS[2])
if write_error(renamed) then return write_error(renamed) end
return 1
"""


async def rename_legacy_keys(client: RedisClient, prefix: str, topic: str) -> None:
    """Move `topic`'s keys from their names before hash tags to today's, on a single
    server. A cluster never held the old names (they span slots), so it is skipped."""
    if is_cluster(client):
        return
    for old, new in legacy_keys(prefix, topic):
        outcome = await client.eval(RENAME_LEGACY, 2, old, new)
        if outcome == 1:
            log.info("redis_key_renamed", old=old, new=new)
        elif outcome == -1:
            log.warning("redis_key_not_renamed", old=old, new=new,
                        reason="both exist: the old one was written after the rename")


# The writes that must happen together are scripts over one topic's keys (one slot),
# not MULTI/EXEC: redis-py's asyncio cluster client queues each command of a
# transaction by starting a thread and an event loop of its own and waiting for it,
# which blocks the caller's event loop (0.5 ms a command: 250 ms for a relay batch).
# A script's first write goes through redis.pcall and its error is returned as it came
# (OOM, READONLY), so the client raises what it raises for the command alone, an outage
# (eventbook.outages), rather than a generic script error. Only the first write can meet
# OOM: once a script has written, Redis lets it finish.

# Adds entries to stream KEYS[1] in one step; ARGV holds each entry as its number of
# fields, then field, value, ...; returns the new ids.
ADD_ENTRIES = WRITE_ERROR + """
local ids, i = {}, 1
while i <= #ARGV do
    local n = tonumber(ARGV[i])
    local id = redis.pcall('XADD', KEYS[1], '*', unpack(ARGV, i + 1, i + 2 * n))
    if write_error(id) then return write_error(id) end
    ids[#ids + 1] = id
    i = i + 2 * n + 1
end
return ids
"""

# Copies message ARGV[2] (its fields ARGV[3..]) to dead-letter stream KEYS[1],
# acknowledges it in group ARGV[1] of stream KEYS[2] and drops its failure count from
# KEYS[3], in one step: a message is never both dead-lettered and pending, nor neither.
DEAD_LETTER = WRITE_ERROR + """
local added = redis.pcall('XADD', KEYS[1], '*', unpack(ARGV, 3))
if write_error(added) then return write_error(added) end
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
"""


def flat(fields: Mapping[Any, Any]) -> list[EncodableT]:
    """field, value, ... as XADD and the scripts take them."""
    return [part for pair in fields.items() for part in pair]


def entries_argv(entries: list[Mapping[Any, Any]]) -> list[EncodableT]:
    """ARGV of ADD_ENTRIES for `entries`."""
    argv: list[EncodableT] = []
    for fields in entries:
        argv += [len(fields), *flat(fields)]
    return argv


# Removes consumer ARGV[2] of group ARGV[1] of stream KEYS[1] unless its heartbeat
# KEYS[2] exists or it holds a pending message, in one step: XGROUP DELCONSUMER drops a
# consumer's pending messages, which would then never be delivered again.
FORGET_CONSUMER = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return -1 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
"""


def consumer_name() -> str:
    """hostname-pid-random: unique per process, and per actor instance within one."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclasses.dataclass(eq=False)
class Ack:
    """A handled message to acknowledge (and forget the failures of, when it had some)."""

    message_id: str
    failed_before: bool
    done: asyncio.Future[None]


# Acknowledgements sent in one XACK, at most.
ACK_BATCH = 1000


@dataclasses.dataclass(frozen=True)
class Message:
    """One stream entry as the relay wrote it: kind, payload (JSON), request_id, ..."""

    id: str
    fields: dict[str, str]
    attempts: int  # deliveries so far, this one included
    failures: int = 0  # failures that were the message's own, before this delivery

    @property
    def kind(self) -> str:
        return self.fields.get("kind", "")

    @property
    def payload(self) -> dict[str, Any]:
        value = json.loads(self.fields.get("payload") or "{}")
        if not isinstance(value, dict):
            raise ValueError("the payload is not a JSON object")
        return value

    @property
    def request_id(self) -> str | None:
        return self.fields.get("request_id") or None


async def pause(seconds: float, *events: asyncio.Event) -> bool:
    """Sleep up to `seconds`; True as soon as one of `events` is set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        done, _ = await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return bool(done)


class StreamActor:
    """Base of every actor fed by a stream; subclasses set `name`, `topic` and `handle`."""

    name: str = "stream"
    topic: str = ""
    concurrency: int = 10
    # Short enough that a stop request is noticed promptly, and below the client's
    # socket timeout (5 s), which would otherwise cut a blocked read.
    block_ms: int = 1000
    # Deliveries after which a message that never finished (its consumers kept dying
    # on it, or kept being cut off from Redis) is given up on, per allowed attempt.
    deliveries_per_attempt: int = 4

    def __init__(
        self,
        config: Config,
        client: RedisClient,
        *,
        consumer: str | None = None,
        concurrency: int | None = None,
        retry_delay: float = 0.5,
        max_retry_delay: float = 30.0,
        metrics: Metrics | None = None,
        probes: list[Probe] | None = None,
    ) -> None:
        if not self.topic:
            raise TypeError(f"{type(self).__name__} must set a topic")
        self.config = config
        self.redis = client
        self.stream = stream_key(config.redis_prefix, self.topic)
        self.dead_stream = dead_letter_key(config.redis_prefix, self.topic)
        self.failures = failures_key(config.redis_prefix, self.topic)
        self.group = self.name
        self.consumer = consumer or consumer_name()
        self.claim_idle_ms = config.claim_idle_ms
        # A consumer silent this long, with no heartbeat and nothing pending, is gone.
        self.gone_after_ms = max(10 * config.claim_idle_ms, 1000)
        self.heartbeat = heartbeat_key(config.redis_prefix, self.topic, self.consumer)
        self.max_attempts = config.max_attempts
        self.delivery_limit = config.max_attempts * self.deliveries_per_attempt
        if concurrency is not None:
            self.concurrency = concurrency
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.metrics = metrics or Metrics()
        self.availability = Availability(
            # The key written is in the topic's slot: on a cluster, its node is probed.
            [lambda: redis_writable(client, topic_tag(config.redis_prefix, self.topic)),
             *(probes or [])]
        )
        self._stopping = asyncio.Event()
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self._in_hand: set[str] = set()
        # Messages handled while an acknowledgement is on its way are acknowledged
        # together in the next one.
        self._acks: Coalescer[Ack] = Coalescer(self._acknowledge, lambda ack: ack.done,
                                               ACK_BATCH)

    # -- what a subclass provides ----------------------------------------------------

    async def handle(self, message: Message) -> None:
        """Do the message's work. Idempotent: it may run more than once per message."""
        raise NotImplementedError

    async def on_dead_letter(self, message: Message, error: str) -> None:
        """Record that `message` is given up on (for example, mark its booking failed)."""

    # -- the loop --------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        """Read and handle messages until `stopping`; the messages in hand finish first."""
        self._stopping = stopping
        await self.ensure_group()
        log.info("consumer_started", actor=self.name, stream=self.stream, consumer=self.consumer)
        in_flight: set[asyncio.Task[None]] = set()
        keeper = asyncio.create_task(self.keep_claimed())
        try:
            while not stopping.is_set():
                if len(in_flight) >= self.concurrency:
                    await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    messages = await self.fetch(self.concurrency - len(in_flight))
                except Exception as exc:
                    if not is_outage(exc):
                        raise
                    log.warning("consumer_waiting_for_dependencies", error=repr(exc))
                    await self.availability.wait(stopping)
                    continue
                for message in messages:
                    self._in_hand.add(message.id)
                    task = asyncio.create_task(self.process(message))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
        except asyncio.CancelledError:
            # Killed, not stopped: drop what is in hand unacknowledged; it is claimed again.
            for task in in_flight:
                task.cancel()
            raise
        finally:
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            await self.availability.close()
        await self.leave()
        log.info("consumer_stopped", actor=self.name, consumer=self.consumer)

    async def ensure_group(self) -> None:
        """Make the group (from id 0: entries the relay added before any consumer existed
        are read too) and register this consumer in it; forget consumers that are gone.
        First, keys under their names before hash tags are renamed, groups and all."""
        await rename_legacy_keys(self.redis, self.config.redis_prefix, self.topic)
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        await self.beat()
        await self.forget_gone_consumers()

    async def beat(self) -> None:
        """Register this consumer (again, if it was forgotten) and renew its heartbeat."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xgroup_createconsumer(self.stream, self.group, self.consumer)
            pipe.set(self.heartbeat, "1", px=self.gone_after_ms)
            await pipe.execute()

    async def forget_gone_consumers(self) -> list[str]:
        """Remove the group's consumers that hold nothing, have no heartbeat and have been
        silent for gone_after_ms: those of processes that died or were killed."""
        consumers = await self.redis.xinfo_consumers(self.stream, self.group)
        forgotten = []
        for consumer in consumers:
            name = consumer["name"]
            if (name == self.consumer or int(consumer["pending"]) > 0
                    or int(consumer["idle"]) < self.gone_after_ms):
                continue
            keys = [self.stream, heartbeat_key(self.config.redis_prefix, self.topic, name)]
            removed = await self.redis.eval(
                FORGET_CONSUMER, len(keys), *keys, self.group, name
            )
            if removed == 0:
                forgotten.append(name)
        if forgotten:
            log.info("consumers_forgotten", actor=self.name, consumers=forgotten)
        return forgotten

    @property
    def claim_interval(self) -> float:
        return max(0.05, self.claim_idle_ms / 2000)

    async def fetch(self, count: int) -> list[Message]:
        """Up to `count` messages: abandoned ones first (now and then), else new ones."""
        try:
            return await self._fetch(count)
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis lost the stream or the group (a flush, a restart without its data):
            # make it again; what it lost is restored by the reconciler.
            log.warning("consumer_group_missing", stream=self.stream, group=self.group)
            await self.ensure_group()
            return []

    async def _fetch(self, count: int) -> list[Message]:
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + self.claim_interval
            claimed = await self.claim(count)
            if self._claim_cursor != "0-0":
                self._next_claim = now  # more may be waiting past the cursor
            if claimed:
                return claimed
            await self.trim()
            await self.forget_gone_consumers()
        block_ms = min(self.block_ms, max(50, int(self.claim_interval * 1000)))
        reply: Any = await self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms
        )
        # RESP2 reply (the client's protocol): [[stream, [(id, fields), ...]]]
        return [
            Message(entry_id, fields, 1)
            for _, entries in reply or []
            for entry_id, fields in entries
            if fields is not None
        ]

    async def claim(self, count: int) -> list[Message]:
        """Take over messages pending longer than claim_idle_ms, with their delivery and
        failure counts. Messages this consumer has in hand are kept, not handled twice."""
        reply = await self.redis.xautoclaim(
            self.stream, self.group, self.consumer, self.claim_idle_ms,
            start_id=self._claim_cursor, count=count,
        )
        self._claim_cursor = reply[0]
        entries = [(entry_id, fields) for entry_id, fields in reply[1]
                   if entry_id and fields and entry_id not in self._in_hand]
        if not entries:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id, _ in entries:
                pipe.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
                pipe.hget(self.failures, entry_id)
            details = await pipe.execute()
        messages = []
        for (entry_id, fields), detail, failures in zip(
            entries, details[::2], details[1::2], strict=True
        ):
            attempts = int(detail[0]["times_delivered"]) if detail else self.delivery_limit + 1
            messages.append(Message(entry_id, fields, attempts, int(failures or 0)))
            log.info("message_claimed", actor=self.name, message_id=entry_id, attempts=attempts,
                     failures=int(failures or 0), request_id=fields.get("request_id") or None)
        return messages

    async def keep_claimed(self) -> None:
        """Reset the idle time of the messages in hand, so that no consumer (this one
        included) claims a message that is being handled, however long that takes.
        JUSTID: a delivery is not counted. Also renews this consumer's heartbeat."""
        interval = max(0.02, self.claim_idle_ms / 3000)
        beat_every = self.gone_after_ms / 5000
        next_beat = time.monotonic() + beat_every
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + beat_every
                with contextlib.suppress(*REDIS_ERRORS):
                    await self.beat()
            mine: list[StreamIdT] = list(self._in_hand)
            if not mine:
                continue
            with contextlib.suppress(*REDIS_ERRORS):
                await self.redis.xclaim(
                    self.stream, self.group, self.consumer, 0, mine, justid=True
                )

    async def trim(self) -> None:
        """Drop entries every consumer is done with, so the stream does not grow forever.

        Only when this group is the stream's sole reader: then an entry older than both
        the oldest pending one and the last one delivered has been acknowledged.
        """
        groups = await self.redis.xinfo_groups(self.stream)
        if len(groups) != 1:
            return
        summary = await self.redis.xpending(self.stream, self.group)
        threshold = summary["min"] if summary["pending"] else groups[0]["last-delivered-id"]
        if threshold and threshold != "0-0":
            await self.redis.xtrim(self.stream, minid=threshold, approximate=True)

    async def leave(self) -> None:
        """On a clean stop, remove this consumer from the group when it holds nothing."""
        with contextlib.suppress(redis.exceptions.RedisError):
            mine = await self.redis.xpending_range(
                self.stream, self.group, "-", "+", 1, consumername=self.consumer
            )
            await self.redis.delete(self.heartbeat)
            if not mine:
                await self.redis.xgroup_delconsumer(self.stream, self.group, self.consumer)

    # -- one message -----------------------------------------------------------------

    async def process(self, message: Message) -> None:
        """Handle, retry, acknowledge or dead-letter one message, logging with its request id."""
        with structlog.contextvars.bound_contextvars(
            request_id=message.request_id, actor=self.name, message_id=message.id
        ):
            try:
                await self._process(message)
            except Exception as exc:
                # Redis went away before the acknowledgement (or the failure could not be
                # counted): the message stays pending and is claimed again later.
                if is_outage(exc):
                    log.warning("message_left_pending", error=repr(exc))
                else:
                    log.exception("message_left_pending", error=repr(exc))
            finally:
                self._in_hand.discard(message.id)

    async def _process(self, message: Message) -> None:
        if message.attempts > self.delivery_limit:
            await self.dead_letter(
                message, "exceeded max deliveries: consumers stopped before finishing it",
                cause="deliveries",
            )
            return
        failures = message.failures
        # An outage-class error while every dependency answers (a pooled connection the
        # server dropped while idle, say) is retried once at once, uncounted; repeated
        # with the dependencies healthy, it is the message's own.
        transient_retry = True
        while True:
            started = time.perf_counter()
            try:
                await self.handle(message)
            except Exception as exc:
                error = repr(exc)
                if not await self.availability.answers():
                    log.warning("message_waiting_for_dependencies", kind=message.kind,
                                error=error)
                    if not await self.availability.wait(self._stopping):
                        log.info("message_retry_deferred", failures=failures)
                        return
                    transient_retry = True
                    continue
                if is_outage(exc) and transient_retry:
                    log.info("message_retried_after_transient_error", kind=message.kind,
                             error=error)
                    transient_retry = False
                    continue
                failures = int(await self.redis.hincrby(self.failures, message.id, 1))
                log.warning("message_failed", kind=message.kind, attempts=failures,
                            max_attempts=self.max_attempts, error=error)
                if failures >= self.max_attempts:
                    await self.dead_letter(message, error, cause="message", attempts=failures)
                    return
                if await pause(self.backoff(failures), self._stopping):
                    log.info("message_retry_deferred", failures=failures)
                    return
                continue
            ack = Ack(message.id, bool(failures), asyncio.get_running_loop().create_future())
            self._acks.submit(ack)
            await ack.done
            log.info("message_handled", kind=message.kind, attempts=message.attempts,
                     duration_ms=round((time.perf_counter() - started) * 1000, 2))
            return

    async def _acknowledge(self, acks: list[Ack]) -> None:
        failed = [ack.message_id for ack in acks if ack.failed_before]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(self.stream, self.group, *(ack.message_id for ack in acks))
            if failed:
                pipe.hdel(self.failures, *failed)
            await pipe.execute()
        for ack in acks:
            if not ack.done.done():
                ack.done.set_result(None)

    def backoff(self, failures: int) -> float:
        delay = min(self.max_retry_delay, self.retry_delay * 2.0 ** (failures - 1))
        return delay * random.uniform(0.5, 1.5)

    async def dead_letter(
        self, message: Message, error: str, *, cause: str, attempts: int | None = None
    ) -> None:
        """Give up: run the hook, then copy the message to the dead-letter stream and ack it.

        When the hook fails the message stays pending and comes back through a claim,
        which dead-letters it again (the hook is idempotent).
        """
        try:
            await self.on_dead_letter(message, error)
        except Exception:
            log.exception("dead_letter_hook_failed", kind=message.kind)
            return
        attempts = message.attempts if attempts is None else attempts
        fields: dict[str, Any] = dict(message.fields)
        fields |= {
            "error": error[:2000],
            "cause": cause,
            "attempts": str(attempts),
            "stream": self.stream,
            "message_id": message.id,
            "consumer": self.consumer,
            "failed_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        keys = [self.dead_stream, self.stream, self.failures]
        await self.redis.eval(DEAD_LETTER, len(keys), *keys, self.group, message.id,
                              *flat(fields))
        log.error("message_dead_lettered", kind=message.kind, attempts=attempts,
                  cause=cause, error=error, dead_letter_stream=self.dead_stream)
