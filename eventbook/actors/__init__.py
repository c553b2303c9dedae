"""Background actors: long-running tasks fed by Redis Streams consumer groups."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg

from eventbook import topics
from eventbook.actors.confirmations import Confirmations
from eventbook.actors.holds import Holds
from eventbook.actors.mailer import build_mailer
from eventbook.actors.notifications import Notifications
from eventbook.actors.reconciler import Reconciler
from eventbook.actors.relay import OutboxRelay
from eventbook.actors.stream import StreamActor, dead_letter_key, stream_key
from eventbook.actors.supervisor import Actor, Supervisor
from eventbook.actors.webhooks import WebhookFanout, Webhooks
from eventbook.config import Config
from eventbook.connections import RedisClient
from eventbook.metrics import Metrics, WatchedStream

__all__ = [
    "ACTOR_NAMES", "STREAM_ACTORS", "Actor", "Supervisor", "build_actors", "supervised",
    "watch_streams",
]

ActorFactory = Callable[[Config, asyncpg.Pool, RedisClient, Metrics], Actor]

# Every actor kind by name, in start order.
FACTORIES: dict[str, ActorFactory] = {
    "relay": lambda config, pool, client, metrics: OutboxRelay(config, pool, client),
    topics.CONFIRMATIONS: lambda config, pool, client, metrics: Confirmations(
        config, pool, client, build_mailer(config), metrics=metrics
    ),
    topics.NOTIFICATIONS: lambda config, pool, client, metrics: Notifications(
        config, pool, client, build_mailer(config), metrics=metrics
    ),
    "reconciler": lambda config, pool, client, metrics: Reconciler(
        config, pool, client, metrics
    ),
    "holds": lambda config, pool, client, metrics: Holds(pool, metrics),
    topics.WEBHOOKS: lambda config, pool, client, metrics: Webhooks(
        config, pool, client, build_mailer(config), metrics
    ),
}

ACTOR_NAMES: tuple[str, ...] = tuple(FACTORIES)


# The actors fed by a stream: each reads {topic}:stream in the consumer group {name}.
STREAM_ACTORS: tuple[type[StreamActor], ...] = (Confirmations, Notifications, WebhookFanout)


def build_actors(
    config: Config, pool: asyncpg.Pool, client: RedisClient, names: tuple[str, ...] = (),
    metrics: Metrics | None = None,
) -> list[Actor]:
    """The actors this process runs: `names`, or every kind when empty."""
    unknown = set(names) - set(ACTOR_NAMES)
    if unknown:
        raise ValueError(f"unknown actors: {', '.join(sorted(unknown))}")
    metrics = metrics or Metrics()
    return [FACTORIES[name](config, pool, client, metrics) for name in ACTOR_NAMES
            if not names or name in names]


@asynccontextmanager
async def supervised(
    config: Config, pool: asyncpg.Pool, client: RedisClient, names: tuple[str, ...],
    metrics: Metrics,
) -> AsyncIterator[Supervisor]:
    """The actors `names` (every kind when empty) running under a supervisor until the
    block ends; then each finishes and acknowledges the messages in hand."""
    supervisor = Supervisor(build_actors(config, pool, client, names, metrics), metrics=metrics)
    supervisor.start()
    try:
        yield supervisor
    finally:
        await supervisor.stop()


def watched_streams(prefix: str) -> list[WatchedStream]:
    """Every actor's stream, with its consumer group and dead-letter stream."""
    return [
        WatchedStream(
            stream_key(prefix, actor.topic), actor.name, dead_letter_key(prefix, actor.topic)
        )
        for actor in STREAM_ACTORS
    ]


def watch_streams(metrics: Metrics, prefix: str) -> None:
    """Report every stream's gauges, whichever actors this process runs."""
    for watched in watched_streams(prefix):
        metrics.watch_stream(watched.stream, watched.group, watched.dead_letter)
