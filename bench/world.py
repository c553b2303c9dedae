"""The bench's own world: private PostgreSQL and Redis in a temporary directory, a fresh
migrated database, and data written straight in SQL (customers with tokens, events)."""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from eventbook import connections, db
from eventbook.auth import Tokens
from eventbook.config import Config
from eventbook.embedded import EmbeddedServices
from tests import seed

# Long enough for the slowest scenario; the bench mints tokens once.
TOKEN_TTL_SECONDS = 6 * 3600

# Words of event listings, for events a search has something to find in: common words
# ("the", "and", "music") make the broad prefixes an abusive search goes for.
VOCABULARY = """
music live night rock jazz festival concert band stage open air summer winter spring
autumn city park hall theatre theater club bar show tour album release party dance dj set
guest special the and with for from your our their this that will be is are a an of in on
at to by all new old best great good free ticket tickets doors early late evening morning
afternoon weekend friday saturday sunday monday family kids children adults welcome food
drinks wine beer craft market fair art gallery exhibition talk lecture workshop class
course learn meet community local international world classic classical orchestra symphony
piano violin guitar drums bass voice choir opera ballet comedy stand up improv film cinema
screening premiere book reading poetry author signing sport match game run race marathon
cycling yoga fitness health wellness meditation tech conference summit meetup startup
developer design product data science history museum walk garden nature river lake
mountain beach boat harbour harbor square street avenue road center centre arena stadium
venue room floor main annual first second third final edition anniversary celebration
holiday christmas easter halloween valentine charity benefit fundraiser gala dinner lunch
brunch breakfast tasting cooking chef kitchen vegan coffee tea chocolate cheese bread
""".split()


class World:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.logs = directory / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.services = EmbeddedServices(directory / "data")
        self.jwt_secret = secrets.token_urlsafe(48)
        self.metrics_token = secrets.token_urlsafe(32)
        self.database_url = ""
        self.redis_url = ""
        self.pool: asyncpg.Pool | None = None
        self.organizer: uuid.UUID | None = None

    def start_servers(self) -> None:
        """Start PostgreSQL and Redis (outside any event loop: the embedded start uses one)."""
        database_url, redis_url = self.services.start()
        assert database_url and redis_url
        self.database_url, self.redis_url = database_url, redis_url

    async def prepare(self) -> None:
        """Migrate the fresh database and add the ceilings' booking (naive.sql); open the
        bench's own pool; make the organizer."""
        conn = await asyncpg.connect(self.database_url)
        try:
            await db.migrate(conn)
            await conn.execute((Path(__file__).parent / "naive.sql").read_text())
        finally:
            await conn.close()
        self.pool = await connections.create_pool(self.database_url, 1, 4)
        [self.organizer] = await seed.insert_users(self.db, 1, "organizer", name="Bench")

    async def close_pool(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    def stop_servers(self) -> None:
        self.services.release()

    @property
    def db(self) -> asyncpg.Pool:
        assert self.pool is not None
        return self.pool

    def server_env(self) -> dict[str, str]:
        """What eventbook needs to find the bench's servers, and a metrics token as a
        production deploy has; everything else is default."""
        return {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "JWT_SECRET": self.jwt_secret,
            "EVENTBOOK_METRICS_TOKEN": self.metrics_token,
            "EVENTBOOK_LOG_FORMAT": "json",
        }

    def tokens(self) -> Tokens:
        """What signs the bench's tokens: the servers' secret, default claims, a lifetime
        that outlasts the run."""
        defaults = Config()
        return Tokens(self.jwt_secret, defaults.jwt_issuer, defaults.jwt_audience,
                      TOKEN_TTL_SECONDS)

    # -- data ----------------------------------------------------------------------

    async def customers_file(self, count: int, name: str = "customers") -> Path:
        """`count` new customers, written as "token<TAB>user_id" lines for load.lua; also
        numbered in bench_customers for pgbench's script."""
        ids = await seed.insert_users(self.db, count, name="Bench")
        tokens = self.tokens()
        path = self.directory / f"{name}.tsv"
        path.write_text("".join(f"{tokens.issue(id_, 'customer')}\t{id_}\n" for id_ in ids))
        await self.db.execute(
            "CREATE TABLE IF NOT EXISTS bench_customers (n integer PRIMARY KEY, id uuid NOT NULL)"
        )
        await self.db.execute(
            "INSERT INTO bench_customers (n, id)"
            " SELECT coalesce((SELECT max(n) FROM bench_customers), 0) + o, u"
            "   FROM unnest($1::uuid[]) WITH ORDINALITY AS t(u, o)",
            ids,
        )
        return path

    async def insert_events(self, count: int, capacity: int, **columns: Any) -> list[uuid.UUID]:
        rows = await self.db.fetch(
            "INSERT INTO events (organizer_id, title, starts_at, capacity, available_tickets,"
            " max_tickets_per_booking)"
            " SELECT $1, 'Bench event ' || n, now() + interval '30 days', $2, $2, $3"
            "   FROM generate_series(1, $4) AS n RETURNING id",
            self.organizer, capacity, columns.get("max_tickets_per_booking", 10), count,
        )
        return [row["id"] for row in rows]

    async def insert_listings(self, count: int) -> None:
        """`count` scheduled events over the next year with titles of 3 words and
        descriptions of 30 drawn from VOCABULARY, the frequent ones more often."""
        await self.db.execute(
            """
            INSERT INTO events (organizer_id, title, description, starts_at, capacity,
                                available_tickets)
            SELECT $1,
                   (SELECT string_agg(($2::text[])[1 + floor(random() ^ 2 * $3)::int], ' ')
                      FROM generate_series(1, 3 + 0 * n)),
                   (SELECT string_agg(($2::text[])[1 + floor(random() ^ 2 * $3)::int], ' ')
                      FROM generate_series(1, 30 + 0 * n)),
                   now() + interval '1 day' + random() * interval '365 days', 1000, 1000
              FROM generate_series(1, $4) AS n
            """,
            self.organizer, VOCABULARY, len(VOCABULARY), count,
        )
        await self.db.execute("ANALYZE events")

    async def insert_ticket_types(self, event: uuid.UUID,
                                  types: list[tuple[str, int, int | None]]) -> list[uuid.UUID]:
        """The event's ticket types become `types` (name, price_cents, quota): the first
        is its default type renamed, the others are added."""
        (name, price, quota), *others = types
        ids = [await self.db.fetchval(
            "UPDATE ticket_types SET name = $2, price_cents = $3, quota = $4"
            " WHERE event_id = $1 RETURNING id",
            event, name, price, quota,
        )]
        for name, price, quota in others:
            ids.append(await self.db.fetchval(
                "INSERT INTO ticket_types (event_id, name, price_cents, quota)"
                " VALUES ($1, $2, $3, $4) RETURNING id",
                event, name, price, quota,
            ))
        return ids

    def paths_file(self, name: str, events: list[uuid.UUID], resource: str = "bookings"
                   ) -> Path:
        return self.lines_file(f"{name}.paths",
                               [f"/api/v1/events/{e}/{resource}" for e in events])

    def lines_file(self, name: str, lines: list[str]) -> Path:
        path = self.directory / name
        path.write_text("".join(f"{line}\n" for line in lines))
        return path

    async def sold(self, events: list[uuid.UUID]) -> dict[str, Any]:
        """What the database says was sold on `events`, and over which span of time: from
        the first booking, or the first hold when a hold came first, to the last booking
        (created_at is their transaction's start)."""
        row = await self.db.fetchrow(
            "SELECT count(*) AS bookings, coalesce(sum(quantity), 0) AS tickets,"
            " extract(epoch FROM max(created_at) - least(min(created_at),"
            "  (SELECT min(h.created_at) FROM holds h WHERE h.event_id = ANY($1)))) AS span"
            " FROM bookings WHERE event_id = ANY($1) AND status = 'confirmed'",
            events,
        )
        assert row is not None
        return {"bookings": row["bookings"], "tickets": int(row["tickets"]),
                "span": float(row["span"] or 0.0)}

    async def ledger(self, event: uuid.UUID) -> dict[str, int]:
        """capacity, available_tickets, the tickets confirmed bookings hold, and the
        event's holds by status."""
        row = await self.db.fetchrow(
            "SELECT e.capacity, e.available_tickets,"
            " (SELECT coalesce(sum(quantity), 0) FROM bookings b"
            "   WHERE b.event_id = e.id AND b.status = 'confirmed') AS held,"
            " (SELECT count(*) FROM bookings b WHERE b.event_id = e.id) AS bookings,"
            " (SELECT count(*) FROM bookings b"
            "   WHERE b.event_id = e.id AND b.hold_id IS NOT NULL) AS from_holds,"
            " (SELECT count(*) FROM holds h WHERE h.event_id = e.id) AS holds,"
            " (SELECT count(*) FROM holds h"
            "   WHERE h.event_id = e.id AND h.status = 'held') AS holds_live,"
            " (SELECT count(*) FROM holds h"
            "   WHERE h.event_id = e.id AND h.status = 'confirmed') AS holds_confirmed,"
            " (SELECT count(*) FROM holds h"
            "   WHERE h.event_id = e.id AND h.status = 'expired') AS holds_expired"
            " FROM events e WHERE e.id = $1",
            event,
        )
        assert row is not None
        return {key: int(value) for key, value in row.items()}

    async def type_ledger(self, event: uuid.UUID) -> dict[str, dict[str, int | None]]:
        """Each ticket type of `event` by name: its quota, its taken count, and the
        tickets of it in confirmed bookings and in live holds."""
        rows = await self.db.fetch(
            "SELECT t.name, t.quota, t.taken,"
            " (SELECT coalesce(sum(i.quantity), 0) FROM booking_items i"
            "   JOIN bookings b ON b.id = i.booking_id"
            "  WHERE i.ticket_type_id = t.id AND b.status = 'confirmed') AS sold,"
            " (SELECT coalesce(sum(i.quantity), 0) FROM hold_items i"
            "   JOIN holds h ON h.id = i.hold_id"
            "  WHERE i.ticket_type_id = t.id AND h.status = 'held') AS held"
            " FROM ticket_types t WHERE t.event_id = $1",
            event,
        )
        return {row["name"]: {"quota": row["quota"], "taken": row["taken"],
                              "sold": int(row["sold"]), "held": int(row["held"])}
                for row in rows}

    async def sold_out(self, event: uuid.UUID) -> bool:
        """No ticket left and none held: everything the event had is sold."""
        done: bool = await self.db.fetchval(
            "SELECT available_tickets = 0 AND NOT EXISTS"
            " (SELECT FROM holds h WHERE h.event_id = $1 AND h.status = 'held')"
            " FROM events WHERE id = $1",
            event,
        )
        return done

    async def available(self, event: uuid.UUID) -> int:
        value: int = await self.db.fetchval(
            "SELECT available_tickets FROM events WHERE id = $1", event
        )
        return value
