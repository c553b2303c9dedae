"""Announcements: the organizer watches each change reach the attendees."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from marshmallow import Schema, fields, validate

from eventbook import db
from eventbook.endpoints import ORGANIZER, endpoint, json_response
from eventbook.events import owned_event
from eventbook.keys import POOL
from eventbook.pages import (
    INTEGER,
    PageQuery,
    decode_cursor,
    page_of,
    page_response,
    split_page,
)

routes = web.RouteTableDef()

ANNOUNCEMENTS_LIST = db.query("announcements_list")


class AnnouncementSchema(Schema):
    version = fields.Integer(required=True, metadata={"description": "the event's version"})
    kind = fields.String(
        required=True, validate=validate.OneOf(("event_updated", "event_cancelled"))
    )
    changed_at = fields.AwareDateTime(required=True)
    recipients_total = fields.Integer(
        required=True, allow_none=True,
        metadata={"description": "attendees to tell; null until the fan-out has counted"},
    )
    delivered = fields.Integer(required=True)
    failed = fields.Integer(required=True, metadata={"description": "mails given up on"})
    superseded = fields.Boolean(
        required=True,
        metadata={"description": "a newer change exists; attendees not yet told this one "
                                 "are told only the newer one"},
    )
    started_at = fields.AwareDateTime(required=True, allow_none=True)
    finished_at = fields.AwareDateTime(required=True, allow_none=True)


ANNOUNCEMENT = AnnouncementSchema()
ANNOUNCEMENT_PAGE = page_of(AnnouncementSchema)


@routes.get("/api/v1/events/{id}/announcements")
@endpoint(
    "How each change of an event reached its attendees",
    roles=ORGANIZER,
    query=PageQuery(),
    response=ANNOUNCEMENT_PAGE,
    problems={403: ["not_event_owner"], 404: ["event_not_found"]},
    tag="events",
    description="One item per change that notifies attendees (title, venue, start or end "
    "changed; or the event cancelled), newest first.",
)
async def list_announcements(request: web.Request, query: dict[str, Any]) -> web.Response:
    event = await owned_event(request)
    before = None
    if query["cursor"] is not None:
        (before,) = decode_cursor(query["cursor"], INTEGER)
    rows = await request.app[POOL].fetch(
        ANNOUNCEMENTS_LIST, event, before, query["limit"] + 1
    )
    page, next_cursor = split_page(rows, query["limit"], lambda row: (row["version"],))
    return json_response(page_response(ANNOUNCEMENT.dump(page, many=True), next_cursor))
