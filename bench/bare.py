"""The ceilings' servers: bare aiohttp handlers with none of eventbook's layers.

    python -m bench.bare json PORT             answers every POST with a fixed JSON booking
    python -m bench.bare book PORT DATABASE_URL  books one ticket per POST (bench/naive.sql)

No middleware, no token check, no validation, no logging: what is left is the HTTP
stack (json) or the HTTP stack plus one stored-procedure call (book), the floor under
eventbook's own booking handler. The user comes from the X-User header the bench sends.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from eventbook import connections

POOL = web.AppKey("pool", asyncpg.Pool)

# The shape and size of eventbook's 201 answer.
SAMPLE = json.dumps(
    {
        "id": str(uuid.uuid4()), "event_id": str(uuid.uuid4()), "user_id": str(uuid.uuid4()),
        "quantity": 1, "status": "confirmed", "confirmation_status": "pending",
        "confirmed_at": None, "created_at": "2030-01-01T12:00:00.123456+00:00",
    },
    separators=(",", ":"),
)


async def answer_json(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text=SAMPLE, status=201, content_type="application/json")


async def answer_booking(request: web.Request) -> web.Response:
    await request.read()
    row = await request.app[POOL].fetchrow(
        "SELECT outcome, available, id FROM bench_book_one($1, $2)",
        uuid.UUID(request.match_info["id"]), uuid.UUID(request.headers["X-User"]),
    )
    assert row is not None
    status = 201 if row["outcome"] == "created" else 409
    body = {"outcome": row["outcome"], "available": row["available"], "id": str(row["id"])}
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def build(mode: str, database_url: str | None) -> web.Application:
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    if mode == "json":
        app.router.add_post("/api/v1/events/{id}/bookings", answer_json)
        return app

    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        assert database_url is not None
        # eventbook's default pool size, so the two differ only in what runs per request.
        app[POOL] = await connections.create_pool(database_url, 2, 20)
        yield
        await app[POOL].close()

    app.cleanup_ctx.append(pool_ctx)
    app.router.add_post("/api/v1/events/{id}/bookings", answer_booking)
    return app


def main(argv: list[str]) -> int:
    mode, port = argv[0], int(argv[1])
    database_url = argv[2] if len(argv) > 2 else None
    web.run_app(build(mode, database_url), host="127.0.0.1", port=port, print=None,
                access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
