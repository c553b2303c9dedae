"""Background actors: long-running tasks fed by Redis Streams consumer groups."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import redis.asyncio

from eventbook.actors.confirmations import Confirmations
from eventbook.actors.fanout import Fanout
from eventbook.actors.mailer import build_mailer
from eventbook.actors.relay import OutboxRelay
from eventbook.actors.supervisor import Actor, Supervisor
from eventbook.config import Config

__all__ = ["ACTOR_NAMES", "Actor", "Supervisor", "build_actors"]

ActorFactory = Callable[[Config, asyncpg.Pool, redis.asyncio.Redis], Actor]

# Every actor kind by name, in start order.
FACTORIES: dict[str, ActorFactory] = {
    "relay": OutboxRelay,
    "confirmations": lambda config, pool, client: Confirmations(
        config, pool, client, build_mailer(config)
    ),
    "notifications": lambda config, pool, client: Fanout(
        config, pool, client, build_mailer(config)
    ),
}

ACTOR_NAMES: tuple[str, ...] = tuple(FACTORIES)


def build_actors(
    config: Config, pool: asyncpg.Pool, client: redis.asyncio.Redis, names: tuple[str, ...] = ()
) -> list[Actor]:
    """The actors this process runs: `names`, or every kind when empty."""
    unknown = set(names) - set(ACTOR_NAMES)
    if unknown:
        raise ValueError(f"unknown actors: {', '.join(sorted(unknown))}")
    return [FACTORIES[name](config, pool, client) for name in ACTOR_NAMES
            if not names or name in names]
