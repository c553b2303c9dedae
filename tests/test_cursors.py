"""Cursors: whatever a client sends as `cursor`, every list answers its page or a 422
naming `cursor`, never a 500. A cursor is opaque, but it is only base64 of a JSON array:
anyone can make one with any values in it."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from eventbook.pages import encode_cursor
from tests.assertions import assert_problem
from tests.client import Api, list_routes
from tests.live import LiveServer, World


def as_cursor(value: Any) -> str:
    """`value` encoded the way the lists encode their cursors."""
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_an_announcements_cursor_outside_the_integer_range_is_a_422(
    api: Api, organizer: Any
) -> None:
    event = await api.create_event(organizer)
    path = f"/api/v1/events/{event['id']}/announcements"
    for version in (2**31, -(2**31) - 1, 2**63, 10**40):
        answer = await api.get(path, organizer, params={"cursor": encode_cursor([version])})
        body = await assert_problem(answer, 422, "validation_failed")
        assert "cursor" in body["errors"]
    for version in (2**31 - 1, -(2**31)):
        answer = await api.get(path, organizer, params={"cursor": encode_cursor([version])})
        assert answer.status == 200, await answer.text()


def offset(minutes: int) -> dt.timezone:
    return dt.timezone(dt.timedelta(minutes=minutes))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=6,
)
# What the lists put in their cursors (a time with an offset and an id, or a version),
# out to the edges of their types and past them.
TIMES = st.datetimes(timezones=st.none() | st.integers(-1439, 1439).map(offset)).map(
    lambda moment: moment.isoformat()
)
IDS = st.uuids().map(str)
KEY_VALUES = st.one_of(st.integers(), TIMES, IDS, st.text(max_size=40), JSON)
CURSORS = st.one_of(
    st.tuples(TIMES, IDS).map(as_cursor),
    st.tuples(st.integers()).map(as_cursor),
    st.lists(KEY_VALUES, max_size=3).map(as_cursor),
    JSON.map(as_cursor),
    st.binary(max_size=300).map(lambda raw: base64.urlsafe_b64encode(raw).decode()),
    st.text(max_size=512),
)


def test_no_cursor_makes_any_list_fail(live_server: LiveServer) -> None:
    world = World(live_server.url)
    lists = []
    for template, roles in list_routes(live_server.app):
        role = world.role_for(list(roles or ()))
        headers = {"Authorization": f"Bearer {world.tokens[role]}"} if role else {}
        lists.append((template.format(id=world.existing_id(template)), headers))
    assert len(lists) >= 5, lists

    @given(cursor=CURSORS)
    @example(cursor=as_cursor([2**31]))
    @example(cursor=as_cursor(["9999-12-31T23:59:59-23:59", str(uuid.UUID(int=0))]))
    @example(cursor=as_cursor(["0001-01-01T00:00:00+23:59", str(uuid.UUID(int=0))]))
    @settings(max_examples=150, deadline=None, derandomize=True, database=None)
    def answers_a_page_or_a_422(cursor: str) -> None:
        for path, headers in lists:
            answer = world.session.get(
                f"{live_server.url}{path}", params={"cursor": cursor}, headers=headers,
                timeout=10,
            )
            assert answer.status_code in (200, 422), (path, cursor, answer.text)
            if answer.status_code == 422:
                assert "cursor" in answer.json()["errors"], (path, cursor, answer.text)

    answers_a_page_or_a_422()
