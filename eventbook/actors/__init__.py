"""Background actors: long-running tasks fed by Redis Streams consumer groups."""

from __future__ import annotations

import asyncpg
import redis.asyncio

from eventbook.actors.supervisor import Actor, Supervisor
from eventbook.config import Config

__all__ = ["ACTOR_NAMES", "Actor", "Supervisor", "build_actors"]

ACTOR_NAMES: tuple[str, ...] = ()


def build_actors(
    config: Config, pool: asyncpg.Pool, client: redis.asyncio.Redis, names: tuple[str, ...] = ()
) -> list[Actor]:
    """The actors this process runs: `names`, or every kind when empty."""
    unknown = set(names) - set(ACTOR_NAMES)
    if unknown:
        raise ValueError(f"unknown actors: {', '.join(sorted(unknown))}")
    return []
