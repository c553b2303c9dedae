"""Notifications: the mails sent to the signed-in user, read back."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from marshmallow import Schema, fields, validate

from eventbook import db
from eventbook.auth import principal
from eventbook.endpoints import SIGNED_IN, endpoint, json_response
from eventbook.keys import POOL
from eventbook.pages import (
    PageQuery,
    fetch_page,
    page_of,
    page_response,
)

routes = web.RouteTableDef()

KINDS = (
    "booking_confirmed", "booking_cancelled", "event_updated", "event_cancelled",
    "waitlist_offer",
)


class NotificationSchema(Schema):
    id = fields.UUID(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    event_id = fields.UUID(required=True)
    booking_id = fields.UUID(required=True, allow_none=True)
    hold_id = fields.UUID(
        required=True, allow_none=True,
        metadata={"description": "A waiting-list offer's hold, to confirm or release."},
    )
    subject = fields.String(required=True)
    body = fields.String(required=True)
    created_at = fields.AwareDateTime(required=True)
    sent_at = fields.AwareDateTime(required=True)


NOTIFICATION = NotificationSchema()
NOTIFICATION_PAGE = page_of(NotificationSchema)
NOTIFICATIONS_OF_USER = db.query("notifications_of_user")
NOTIFICATIONS_OF_USER_AFTER = db.query("notifications_of_user_after")


@routes.get("/api/v1/me/notifications")
@endpoint(
    "My mails, newest first",
    roles=SIGNED_IN,
    query=PageQuery(),
    response=NOTIFICATION_PAGE,
    tag="notifications",
    description="Only mails actually sent; one still being sent appears once it is.",
)
async def list_notifications(request: web.Request, query: dict[str, Any]) -> web.Response:
    page, next_cursor = await fetch_page(
        request.app[POOL], NOTIFICATIONS_OF_USER, NOTIFICATIONS_OF_USER_AFTER,
        principal(request).id, query,
        lambda row: (row["created_at"], row["id"]),
    )
    return json_response(page_response(NOTIFICATION.dump(page, many=True), next_cursor))
