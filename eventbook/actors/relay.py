"""The outbox relay: moves outbox rows from PostgreSQL into their Redis Streams."""

from __future__ import annotations

import asyncio
import itertools
import json

import asyncpg
import structlog
from redis.typing import EncodableT, FieldT

from eventbook import db, topics
from eventbook.actors.stream import (
    ADD_ENTRIES,
    entries_argv,
    pause,
    rename_legacy_keys,
    stream_key,
)
from eventbook.config import Config
from eventbook.connections import RedisClient
from eventbook.outages import Availability, is_outage, postgres_writable, redis_writable

log = structlog.get_logger(__name__)

CHANNEL = "eventbook_outbox"

LOCK_BATCH = db.query("relay_lock_batch")
DELETE_BATCH = db.query("relay_delete_batch")


def message_fields(row: asyncpg.Record) -> dict[FieldT, EncodableT]:
    return {
        "kind": row["kind"],
        "payload": json.dumps(row["payload"], separators=(",", ":")),
        "request_id": row["request_id"] or "",
        "outbox_id": str(row["id"]),
        "created_at": row["created_at"].isoformat(),
    }


class OutboxRelay:
    """Wakes on NOTIFY eventbook_outbox (and polls, in case a notification was missed),
    then relays rows in id order. A row leaves the outbox only after Redis accepted it:
    each topic's rows of a batch go in one step (a script over the topic's stream: one
    slot of a cluster; topics are in different ones), and only the rows of the topics Redis
    accepted are deleted. When Redis is down the rows wait."""

    name = "relay"

    def __init__(
        self,
        config: Config,
        pool: asyncpg.Pool,
        client: RedisClient,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
    ) -> None:
        self.config = config
        self.pool = pool
        self.redis = client
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.availability = Availability([
            lambda: postgres_writable(pool), lambda: redis_writable(client, config.redis_prefix)
        ])

    async def run(self, stopping: asyncio.Event) -> None:
        """Relay until `stopping`; while PostgreSQL or Redis is down, wait for both to
        answer (rows wait in the outbox meanwhile) and carry on, without a restart."""
        while not stopping.is_set():
            try:
                await self._listen_and_relay(stopping)
            except Exception as exc:
                if not is_outage(exc):
                    raise
                log.warning("relay_waiting_for_dependencies", error=repr(exc))
                await self.availability.wait(stopping)
        await self.availability.close()

    async def _listen_and_relay(self, stopping: asyncio.Event) -> None:
        assert self.config.direct_url is not None
        # Before the first entry is added under today's name.
        for topic in topics.TOPICS:
            await rename_legacy_keys(self.redis, self.config.redis_prefix, topic)
        wake = asyncio.Event()
        # A connection of its own, to the server itself: a pooled one would be handed to
        # others while listening, and a pooler in transaction mode forgets a LISTEN when
        # its transaction ends.
        listener = await asyncpg.connect(
            self.config.direct_url, timeout=self.config.db_connect_timeout_seconds
        )
        try:
            await listener.add_listener(CHANNEL, lambda *_: wake.set())
            log.info("relay_listening", channel=CHANNEL)
            while not stopping.is_set():
                wake.clear()
                if await self.relay_once() >= self.batch_size:
                    continue
                if listener.is_closed():
                    raise ConnectionError("the LISTEN connection was closed")
                await pause(self.poll_interval, wake, stopping)
        finally:
            if not listener.is_closed():
                listener.terminate()

    async def relay_once(self) -> int:
        """Relay one batch of up to `batch_size` rows; return how many went out.

        When Redis refuses some topics' rows and accepts others', the accepted rows are
        deleted, the refused ones stay for the next try, and the error is raised."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(LOCK_BATCH, self.batch_size)
            if not rows:
                return 0
            by_topic = [list(group) for _, group in itertools.groupby(
                sorted(rows, key=lambda r: (r["topic"], r["id"])), key=lambda r: r["topic"]
            )]
            outcomes = await asyncio.gather(
                *(self._add(batch) for batch in by_topic), return_exceptions=True
            )
            relayed = [row for batch, outcome in zip(by_topic, outcomes, strict=True)
                       if not isinstance(outcome, BaseException) for row in batch]
            if relayed:
                await conn.execute(DELETE_BATCH, [row["id"] for row in relayed])
        for row in sorted(relayed, key=lambda r: r["id"]):
            with structlog.contextvars.bound_contextvars(request_id=row["request_id"]):
                log.info("outbox_relayed", outbox_id=row["id"], topic=row["topic"],
                         kind=row["kind"], payload=row["payload"])
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return len(relayed)

    async def _add(self, rows: list[asyncpg.Record]) -> None:
        """Add the rows of one topic to its stream, in id order, in one step (a script
        over the topic's stream: one slot)."""
        stream = stream_key(self.config.redis_prefix, rows[0]["topic"])
        await self.redis.eval(
            ADD_ENTRIES, 1, stream, *entries_argv([message_fields(row) for row in rows])
        )
