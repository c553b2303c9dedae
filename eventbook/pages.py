"""Lists: the `limit` and `cursor` every list endpoint reads, and the page it answers.

Pagination is by keyset: a cursor is the sort key of the last item sent, so a page
costs an index range scan however deep it is, and rows added meanwhile neither
shift nor repeat the items that follow. The cursor is opaque to clients (base64 of
a JSON array); tampering with it only moves the position within what the caller
may list anyway, so it is not signed.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import asyncpg
from marshmallow import Schema, fields, validate

from eventbook.errors import Problem, validation_problem

DEFAULT_LIMIT = 20
MAX_LIMIT = 100

T = TypeVar("T")


class PageQuery(Schema):
    """The query fields of every list; list endpoints subclass it to add filters."""

    limit = fields.Integer(
        load_default=DEFAULT_LIMIT,
        validate=validate.Range(1, MAX_LIMIT),
        metadata={"description": f"Items per page, 1..{MAX_LIMIT}."},
    )
    cursor = fields.String(
        load_default=None,
        validate=validate.Length(1, 512),
        metadata={"description": "`next_cursor` of the previous page; omit for the first."},
    )


def page_of(item: type[Schema]) -> Schema:
    """The response schema of a list of `item`: {items, next_cursor}."""
    name = item.__name__.removesuffix("Schema") + "PageSchema"
    schema_class = Schema.from_dict(
        {
            "items": fields.List(fields.Nested(item), required=True),
            "next_cursor": fields.String(
                required=True, allow_none=True,
                metadata={"description": "Pass as `cursor` for the next page; null on the last."},
            ),
        },
        name=name,
    )
    return schema_class()


def page_response(items: list[Any], next_cursor: str | None) -> dict[str, Any]:
    return {"items": items, "next_cursor": next_cursor}


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def encode_cursor(values: Sequence[Any]) -> str:
    """An opaque cursor for a keyset position (datetimes, UUIDs, ints, strings)."""
    raw = json.dumps([_plain(value) for value in values], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _bad_cursor() -> Problem:
    return validation_problem(
        {"cursor": ["Not a cursor this list gave out; start again without one."]}
    )


def _timestamptz(value: Any) -> dt.datetime:
    # Every aware datetime Python can hold (years 1..9999) fits PostgreSQL's range.
    if not isinstance(value, str):
        raise ValueError(value)
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(value)
    return moment.astimezone(dt.UTC)


def _uuid(value: Any) -> uuid.UUID:
    if not isinstance(value, str):
        raise ValueError(value)
    return uuid.UUID(value)


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(value)
    if not -(2**31) <= value < 2**31:
        raise ValueError(value)
    return value


def _bigint(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(value)
    if not -(2**63) <= value < 2**63:
        raise ValueError(value)
    return value


# The SQL type of a keyset column, as the conversion of a cursor value to it: a value of
# another type or out of the type's range raises ValueError, so whatever reaches the
# query binds (asyncpg would otherwise fail the query, a 500).
Column = Callable[[Any], Any]

TIMESTAMPTZ: Column = _timestamptz
UUID: Column = _uuid
INTEGER: Column = _integer
BIGINT: Column = _bigint


def decode_cursor(cursor: str, *columns: Column) -> tuple[Any, ...]:
    """The values encode_cursor packed, one per keyset column, each converted to its
    column's type; anything else is a 422 validation problem on `cursor`."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
        values = json.loads(raw)
        if not isinstance(values, list) or len(values) != len(columns):
            raise ValueError(cursor)
        return tuple(
            column(value) for value, column in zip(values, columns, strict=True)
        )
    except (ValueError, TypeError, UnicodeError, binascii.Error, RecursionError, OverflowError):
        raise _bad_cursor() from None


def split_page(
    rows: Sequence[T], limit: int, key: Callable[[T], Sequence[Any]]
) -> tuple[Sequence[T], str | None]:
    """Rows fetched with LIMIT limit + 1: this page, and the cursor after it (None when
    this is the last page). Fetching one extra row tells the last page apart without
    a count."""
    if len(rows) <= limit:
        return rows, None
    page = rows[:limit]
    return page, encode_cursor(key(page[-1]))


async def fetch_page(
    pool: asyncpg.Pool, first: str, after: str, owner: Any, query: dict[str, Any],
    key: Callable[[asyncpg.Record], Sequence[Any]],
) -> tuple[Sequence[asyncpg.Record], str | None]:
    """One page of a list whose rows belong to `owner` (a user, an event) and are sorted
    by a timestamp and an id: `first` reads the first page ($1 owner, $2 limit + 1),
    `after` a page after the cursor ($3, $4 the cursor's timestamp and id). Two queries
    rather than one with an optional condition, so each keeps a plan of its own."""
    limit = query["limit"]
    args: list[Any] = [owner, limit + 1]
    sql = first
    if query["cursor"] is not None:
        args.extend(decode_cursor(query["cursor"], TIMESTAMPTZ, UUID))
        sql = after
    return split_page(await pool.fetch(sql, *args), limit, key)
