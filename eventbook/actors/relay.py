"""The outbox relay: moves outbox rows from PostgreSQL into their Redis Streams."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import redis.asyncio
import structlog
from redis.typing import EncodableT, FieldT

from eventbook import db
from eventbook.actors.stream import pause, stream_key
from eventbook.config import Config
from eventbook.outages import Availability, is_outage, postgres_writable, redis_writable

log = structlog.get_logger(__name__)

CHANNEL = "eventbook_outbox"

TAKE_BATCH = db.query("relay_take_batch")


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
    then relays rows in id order. A row leaves the outbox only when its transaction
    commits, and that happens only after Redis accepted the batch: when Redis is down
    the transaction rolls back and the rows wait."""

    name = "relay"

    def __init__(
        self,
        config: Config,
        pool: asyncpg.Pool,
        client: redis.asyncio.Redis,
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
        """Relay one batch of up to `batch_size` rows; return how many went out."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = sorted(await conn.fetch(TAKE_BATCH, self.batch_size), key=lambda r: r["id"])
            if not rows:
                return 0
            # MULTI/EXEC: Redis takes the whole batch or none of it.
            async with self.redis.pipeline(transaction=True) as pipe:
                for row in rows:
                    pipe.xadd(stream_key(self.config.redis_prefix, row["topic"]),
                              message_fields(row))
                await pipe.execute()
        for row in rows:
            with structlog.contextvars.bound_contextvars(request_id=row["request_id"]):
                log.info("outbox_relayed", outbox_id=row["id"], topic=row["topic"],
                         kind=row["kind"], payload=row["payload"])
        return len(rows)
