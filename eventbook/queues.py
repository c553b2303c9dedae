"""What operators see of the streams: lengths, groups, pending, lag, dead letters, outbox,
webhook deliveries; and the dead-letter operations (list, show, replay, purge)."""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import asyncpg

from eventbook import actors, db, topics
from eventbook.actors.stream import WRITE_ERROR, dead_letter_key, flat, stream_key

# The package, not its names: the reconciler (eventbook.actors.reconciler) replays dead
# letters through this module, so this module is imported while eventbook.actors is.
from eventbook.connections import RedisClient
from eventbook.metrics import stream_state

# Fields the runtime adds when it dead-letters a message; replay strips them.
DEAD_LETTER_FIELDS = ("error", "cause", "attempts", "stream", "message_id", "consumer", "failed_at")
DEAD_LETTER_SCAN_LIMIT = 100_000

# Errors of the first write are returned as they came (see eventbook.actors.stream).
# Adds letter ARGV[1]'s fields (ARGV[2..]) to stream KEYS[1] and deletes it from
# dead-letter stream KEYS[2]; the new id.
_REPLAY = WRITE_ERROR + """
local id = redis.pcall('XADD', KEYS[1], '*', unpack(ARGV, 2))
if write_error(id) then return write_error(id) end
redis.call('XDEL', KEYS[2], ARGV[1])
return id
"""

# Deletes dead-letter stream KEYS[1]; how many letters it held.
_PURGE = WRITE_ERROR + """
local count = redis.call('XLEN', KEYS[1])
local deleted = redis.pcall('DEL', KEYS[1])
if write_error(deleted) then return write_error(deleted) end
return count
"""
OUTBOX_STATS = db.query("outbox_stats")
WEBHOOK_STATS = db.query("metrics_webhooks")


async def _xrange(
    client: RedisClient, key: str, **options: Any
) -> list[tuple[str, dict[str, str]]]:
    """XRANGE as the client decodes it (decode_responses=True: text, never None)."""
    return cast(list[tuple[str, dict[str, str]]], await client.xrange(key, **options) or [])


async def stream_stats(client: RedisClient, prefix: str) -> list[dict[str, Any]]:
    """One row per actor stream and its consumer group."""
    rows: list[dict[str, Any]] = []
    for actor, watched in zip(actors.STREAM_ACTORS, actors.watched_streams(prefix), strict=True):
        state = await stream_state(client, watched)
        rows.append({"stream": actor.topic, "group": watched.group, **dataclasses.asdict(state)})
    return rows


async def outbox_stats(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, Any]:
    row = await conn.fetchrow(OUTBOX_STATS)
    assert row is not None
    return {"backlog": row["backlog"], "oldest_age_s": round(row["oldest_age_s"], 3)}


async def webhook_stats(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, Any]:
    """The webhook deliveries behind the webhooks stream: pending, due now (of enabled
    endpoints) and how long the oldest of those has been due, failed (given up on),
    and the endpoints paused by reason."""
    row = await conn.fetchrow(WEBHOOK_STATS)
    assert row is not None
    return {
        "pending": row["pending"], "due": row["due"],
        "oldest_due_age_s": round(row["oldest_due_seconds"], 3), "failed": row["failed"],
        "endpoints_paused": {"owner": row["paused_by_owner"],
                             "failing": row["paused_failing"]},
    }


def _topics(topic: str | None = None) -> tuple[str, ...]:
    """The topic given, or every one."""
    if topic is not None:
        return (topic,)
    return topics.TOPICS


async def dead_letters(
    client: RedisClient, prefix: str, topic: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    found = []
    for name in _topics(topic):
        for entry_id, fields in await _xrange(client, dead_letter_key(prefix, name), count=limit):
            found.append({"id": entry_id, "topic": name, **fields})
    return found


async def dead_letter(
    client: RedisClient, prefix: str, entry_id: str
) -> dict[str, Any] | None:
    for name in _topics():
        entries = await _xrange(client, dead_letter_key(prefix, name), min=entry_id, max=entry_id)
        if entries:
            return {"id": entries[0][0], "topic": name, **entries[0][1]}
    return None


async def replay(
    client: RedisClient, prefix: str, entry_ids: list[str] | None,
    topic: str | None = None,
) -> list[dict[str, str]]:
    """Put dead letters back on their stream (all of them when `entry_ids` is None).

    The copy and the delete happen in one step (a script over the topic's keys), so a
    letter is never both replayed and kept, nor lost.
    """
    replayed = []
    for letter in await dead_letters(client, prefix, topic, limit=DEAD_LETTER_SCAN_LIMIT):
        if entry_ids is not None and letter["id"] not in entry_ids:
            continue
        original = {key: value for key, value in letter.items()
                    if key not in (*DEAD_LETTER_FIELDS, "id", "topic")}
        keys = [stream_key(prefix, letter["topic"]), dead_letter_key(prefix, letter["topic"])]
        new_id = await client.eval(_REPLAY, len(keys), *keys, letter["id"], *flat(original))
        replayed.append({"id": letter["id"], "topic": letter["topic"], "new_id": new_id})
    return replayed


async def purge(client: RedisClient, prefix: str, topic: str | None = None) -> int:
    removed = 0
    for name in _topics(topic):
        removed += int(await client.eval(_PURGE, 1, dead_letter_key(prefix, name)))
    return removed
