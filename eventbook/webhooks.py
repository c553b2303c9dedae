"""Organizer webhooks: the endpoints an organizer registers, their deliveries, a ping.

What is sent, and how, is the webhooks actor's (eventbook.actors.webhooks); which URLs
may be used is eventbook.webhook_urls'; what a message says is
eventbook.webhook_payloads'.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import uuid
from typing import Any

import asyncpg
import structlog
from aiohttp import web
from marshmallow import Schema, fields, validate

from eventbook import db
from eventbook.auth import principal
from eventbook.endpoints import ORGANIZER, endpoint, json_response, path_uuid
from eventbook.errors import Problem
from eventbook.fields import Text
from eventbook.keys import CONFIG, POOL
from eventbook.pages import (
    TIMESTAMPTZ,
    UUID,
    PageQuery,
    decode_cursor,
    fetch_page,
    page_of,
    page_response,
    split_page,
)
from eventbook.webhook_payloads import ALL_TYPES, EVENT_TYPES, PING, envelope, ping_message_id
from eventbook.webhook_urls import MAX_URL_LENGTH, UrlRefused, check_url

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()

CREATE = db.query("webhook_create")
BY_ID = db.query("webhook_by_id")
OF_ORGANIZER = db.query("webhooks_of_organizer")
OF_ORGANIZER_AFTER = db.query("webhooks_of_organizer_after")
UPDATE = db.query("webhook_update")
DELETE = db.query("webhook_delete")
ROTATE_SECRET = db.query("webhook_rotate_secret")
DELIVERIES = db.query("webhook_deliveries_of")
DELIVERIES_AFTER = db.query("webhook_deliveries_of_after")
DELIVERY_BY_ID = db.query("webhook_delivery_by_id")
RETRY = db.query("webhook_retry")
PING_INSERT = db.query("webhook_ping")

STATUSES = ("enabled", "paused")
DELIVERY_STATUSES = ("pending", "succeeded", "failed")
TAG = "webhooks"


def new_secret() -> str:
    """A Standard Webhooks secret: whsec_ and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class WebhookSchema(Schema):
    id = fields.UUID(required=True)
    url = fields.String(required=True)
    description = fields.String(required=True)
    event_types = fields.List(
        fields.String(), required=True,
        metadata={"description": "The event types sent to it; `*`: all of them."},
    )
    event_ids = fields.List(
        fields.UUID(), required=True, allow_none=True,
        metadata={"description": "Only changes of these events; null: of all yours."},
    )
    status = fields.String(
        required=True, validate=validate.OneOf(STATUSES),
        metadata={"description": (
            "enabled: delivered to. paused: its messages are recorded and wait until it is "
            "enabled again."
        )},
    )
    paused_reason = fields.String(
        required=True, allow_none=True, validate=validate.OneOf(("owner", "failing")),
        metadata={"description": (
            "owner: you paused it. failing: it failed EVENTBOOK_WEBHOOK_PAUSE_AFTER_FAILURES "
            "attempts in a row over EVENTBOOK_WEBHOOK_PAUSE_AFTER_SECONDS (you were mailed)."
        )},
    )
    paused_at = fields.AwareDateTime(required=True, allow_none=True)
    consecutive_failures = fields.Integer(
        required=True, metadata={"description": "Failed attempts since its last success."}
    )
    previous_secret_expires_at = fields.AwareDateTime(
        required=True, allow_none=True, attribute="previous_secret_until",
        metadata={"description": (
            "After a rotation, until when messages are also signed with the previous secret."
        )},
    )
    created_at = fields.AwareDateTime(required=True)
    updated_at = fields.AwareDateTime(required=True)


class NewWebhookSchema(WebhookSchema):
    """The endpoint with its secret: answered once, when it is made."""

    secret = fields.String(
        required=True,
        metadata={"description": (
            "The signing secret (Standard Webhooks, whsec_...). Shown only now; rotate it "
            "to get a new one."
        )},
    )


def _event_types() -> fields.List[Any]:
    return fields.List(
        fields.String(validate=validate.OneOf((*EVENT_TYPES, ALL_TYPES))),
        validate=validate.Length(1, len(EVENT_TYPES) + 1),
        metadata={"description": f"Of {', '.join(EVENT_TYPES)}; or `*` for all."},
    )


def _event_ids() -> fields.List[Any]:
    return fields.List(
        fields.UUID(), allow_none=True, validate=validate.Length(1, 100),
        metadata={"description": "Only changes of these of your events (1..100); null: all."},
    )


def _url(required: bool) -> Text:
    return Text(
        required=required, validate=validate.Length(1, MAX_URL_LENGTH),
        metadata={"description": (
            "https:// (http:// only with EVENTBOOK_WEBHOOK_ALLOW_HTTP); its host must "
            "resolve to public addresses only, unless EVENTBOOK_WEBHOOK_ALLOW_PRIVATE."
        )},
    )


class WebhookBodySchema(Schema):
    url = _url(required=True)
    description = Text(validate=validate.Length(0, 500), load_default="")
    event_types = _event_types()
    event_ids = _event_ids()
    status = fields.String(validate=validate.OneOf(STATUSES), load_default="enabled")


class WebhookChangesSchema(Schema):
    url = _url(required=False)
    description = Text(validate=validate.Length(0, 500))
    event_types = _event_types()
    event_ids = _event_ids()
    status = fields.String(
        validate=validate.OneOf(STATUSES),
        metadata={"description": (
            "enabled ends a pause (yours or for failing): the deliveries that waited go "
            "out at once."
        )},
    )


class SecretSchema(Schema):
    secret = fields.String(required=True, metadata={"description": "The new secret."})
    previous_secret_expires_at = fields.AwareDateTime(
        required=True, attribute="previous_secret_until",
        metadata={"description": "Until then messages are signed with the old one too."},
    )


class DeliverySchema(Schema):
    id = fields.UUID(required=True)
    webhook_id = fields.UUID(required=True, attribute="endpoint_id")
    message_id = fields.String(
        required=True,
        metadata={"description": "The webhook-id header: the same at every attempt."},
    )
    event_type = fields.String(required=True)
    status = fields.String(
        required=True, validate=validate.OneOf(DELIVERY_STATUSES),
        metadata={"description": (
            "pending: to be attempted at next_attempt_at (or waiting while the endpoint "
            "is paused). succeeded: answered 2xx. failed: every attempt of the retry "
            "schedule failed; retry it by hand."
        )},
    )
    attempts = fields.Integer(
        required=True, metadata={"description": "Attempts since it was made or last retried."}
    )
    last_status_code = fields.Integer(
        required=True, allow_none=True,
        metadata={"description": "The last attempt's answer; null if none came."},
    )
    last_error = fields.String(required=True, allow_none=True)
    last_attempt_at = fields.AwareDateTime(required=True, allow_none=True)
    next_attempt_at = fields.AwareDateTime(required=True, allow_none=True)
    created_at = fields.AwareDateTime(required=True)
    finished_at = fields.AwareDateTime(required=True, allow_none=True)
    payload = fields.Method(
        "_payload", required=True,
        metadata={"description": "The body sent: {type, timestamp, api_version, data}."},
    )

    def _payload(self, row: Any) -> Any:
        return json.loads(row["body"])


class DeliveryListQuery(PageQuery):
    status = fields.String(validate=validate.OneOf(DELIVERY_STATUSES), load_default=None)


WEBHOOK = WebhookSchema()
NEW_WEBHOOK = NewWebhookSchema()
WEBHOOK_PAGE = page_of(WebhookSchema)
SECRET = SecretSchema()
DELIVERY = DeliverySchema()
DELIVERY_PAGE = page_of(DeliverySchema)


def webhook_not_found() -> Problem:
    return Problem(404, "webhook_not_found", "There is no such webhook endpoint.")


def delivery_not_found() -> Problem:
    return Problem(404, "delivery_not_found", "There is no such delivery.")


def webhook_id(request: web.Request) -> uuid.UUID:
    return path_uuid(request, "id", "webhook_not_found", "There is no such webhook endpoint.")


def _unknown_event() -> Problem:
    return Problem(422, "unknown_event", "An event in event_ids is not one of your events.")


async def checked_url(request: web.Request, url: str) -> str:
    config = request.app[CONFIG]
    try:
        await check_url(url, allow_http=config.webhook_allow_http,
                        allow_private=config.webhook_allow_private)
    except UrlRefused as exc:
        raise Problem(422, "webhook_url_refused", str(exc)) from None
    return url


def _event_types_of(body: dict[str, Any]) -> list[str]:
    """The types asked for, each once; '*' alone stands for all."""
    types = list(dict.fromkeys(body.get("event_types") or [ALL_TYPES]))
    return [ALL_TYPES] if ALL_TYPES in types else types


def _event_ids_of(value: list[uuid.UUID] | None) -> list[uuid.UUID] | None:
    return None if value is None else list(dict.fromkeys(value))


@routes.post("/api/v1/webhooks")
@endpoint(
    "Register a webhook endpoint",
    roles=ORGANIZER,
    body=WebhookBodySchema(),
    response=NEW_WEBHOOK,
    status=201,
    problems={422: ["validation_failed", "webhook_url_refused", "unknown_event"]},
    tag=TAG,
    description=(
        "Changes of your events are POSTed to `url`, signed the Standard Webhooks way "
        "with the `secret` answered here (and only here). `event_types` defaults to "
        "`[\"*\"]`. A URL whose host resolves to a loopback, private, link-local or "
        "other non-public address is 422 `webhook_url_refused`."
    ),
)
async def create_webhook(request: web.Request, body: dict[str, Any]) -> web.Response:
    url = await checked_url(request, body["url"])
    row = await request.app[POOL].fetchrow(
        CREATE, principal(request).id, url, body["description"], _event_types_of(body),
        _event_ids_of(body.get("event_ids")), body["status"], new_secret(),
    )
    if row is None:
        raise _unknown_event()
    log.info("webhook_created", webhook_id=str(row["id"]), event_types=row["event_types"])
    return json_response(NEW_WEBHOOK.dump(row), status=201)


@routes.get("/api/v1/webhooks")
@endpoint(
    "My webhook endpoints",
    roles=ORGANIZER,
    query=PageQuery(),
    response=WEBHOOK_PAGE,
    problems={422: ["validation_failed"]},
    tag=TAG,
    description="In the order they were made.",
)
async def list_webhooks(request: web.Request, query: dict[str, Any]) -> web.Response:
    rows, cursor = await fetch_page(
        request.app[POOL], OF_ORGANIZER, OF_ORGANIZER_AFTER, principal(request).id, query,
        key=lambda row: (row["created_at"], row["id"]),
    )
    return json_response(page_response(WEBHOOK.dump(rows, many=True), cursor))


async def owned(request: web.Request) -> asyncpg.Record:
    row = await request.app[POOL].fetchrow(BY_ID, webhook_id(request), principal(request).id)
    if row is None:
        raise webhook_not_found()
    return row


@routes.get("/api/v1/webhooks/{id}")
@endpoint(
    "One of my webhook endpoints",
    roles=ORGANIZER,
    response=WEBHOOK,
    problems={404: ["webhook_not_found"]},
    tag=TAG,
    description="Anyone else's is 404. The secret is not shown again.",
)
async def get_webhook(request: web.Request) -> web.Response:
    return json_response(WEBHOOK.dump(await owned(request)))


@routes.patch("/api/v1/webhooks/{id}")
@endpoint(
    "Change a webhook endpoint",
    roles=ORGANIZER,
    body=WebhookChangesSchema(),
    response=WEBHOOK,
    problems={
        404: ["webhook_not_found"],
        422: ["validation_failed", "webhook_url_refused", "unknown_event"],
    },
    tag=TAG,
    description=(
        "Only the fields sent change. `status: paused` stops deliveries (they are kept); "
        "`status: enabled` resumes them, the waiting ones first, and clears a pause for "
        "failing."
    ),
)
async def change_webhook(request: web.Request, body: dict[str, Any]) -> web.Response:
    changes: dict[str, Any] = {}
    if "url" in body:
        changes["url"] = await checked_url(request, body["url"])
    for name in ("description", "status"):
        if name in body:
            changes[name] = body[name]
    if "event_types" in body:
        changes["event_types"] = _event_types_of(body)
    if "event_ids" in body:
        ids = _event_ids_of(body["event_ids"])
        changes["event_ids"] = None if ids is None else [str(i) for i in ids]
    row = await request.app[POOL].fetchrow(
        UPDATE, webhook_id(request), principal(request).id, changes
    )
    if row is None:
        await owned(request)
        raise _unknown_event()
    log.info("webhook_changed", webhook_id=str(row["id"]), fields=sorted(changes),
             status=row["status"])
    return json_response(WEBHOOK.dump(row))


@routes.delete("/api/v1/webhooks/{id}")
@endpoint(
    "Remove a webhook endpoint",
    roles=ORGANIZER,
    status=204,
    problems={404: ["webhook_not_found"]},
    tag=TAG,
    description="With its deliveries; nothing more is sent to it.",
)
async def delete_webhook(request: web.Request) -> web.Response:
    gone = await request.app[POOL].fetchval(DELETE, webhook_id(request), principal(request).id)
    if gone is None:
        raise webhook_not_found()
    log.info("webhook_deleted", webhook_id=str(gone))
    return web.Response(status=204)


@routes.post("/api/v1/webhooks/{id}/secret/rotate")
@endpoint(
    "Rotate a webhook endpoint's secret",
    roles=ORGANIZER,
    response=SECRET,
    problems={404: ["webhook_not_found"]},
    tag=TAG,
    description=(
        "Answers the new secret. Until `previous_secret_expires_at` "
        "(EVENTBOOK_WEBHOOK_SECRET_GRACE_SECONDS) every message carries a signature by "
        "each secret, so receivers can switch at their pace."
    ),
)
async def rotate_secret(request: web.Request) -> web.Response:
    row = await request.app[POOL].fetchrow(
        ROTATE_SECRET, webhook_id(request), principal(request).id, new_secret(),
        float(request.app[CONFIG].webhook_secret_grace_seconds),
    )
    if row is None:
        raise webhook_not_found()
    log.info("webhook_secret_rotated", webhook_id=str(row["id"]))
    return json_response(SECRET.dump(row))


@routes.get("/api/v1/webhooks/{id}/deliveries")
@endpoint(
    "A webhook endpoint's deliveries",
    roles=ORGANIZER,
    query=DeliveryListQuery(),
    response=DELIVERY_PAGE,
    problems={404: ["webhook_not_found"], 422: ["validation_failed"]},
    tag=TAG,
    description="Newest first, optionally of one `status`.",
)
async def list_deliveries(request: web.Request, query: dict[str, Any]) -> web.Response:
    endpoint_row = await owned(request)
    limit = query["limit"]
    if query["cursor"] is None:
        rows = await request.app[POOL].fetch(
            DELIVERIES, endpoint_row["id"], limit + 1, query["status"]
        )
    else:
        at, last = decode_cursor(query["cursor"], TIMESTAMPTZ, UUID)
        rows = await request.app[POOL].fetch(
            DELIVERIES_AFTER, endpoint_row["id"], limit + 1, at, last, query["status"]
        )
    page, cursor = split_page(rows, limit, lambda row: (row["created_at"], row["id"]))
    return json_response(page_response(DELIVERY.dump(page, many=True), cursor))


def delivery_id(request: web.Request) -> uuid.UUID:
    return path_uuid(request, "delivery_id", "delivery_not_found", "There is no such delivery.")


@routes.get("/api/v1/webhooks/{id}/deliveries/{delivery_id}")
@endpoint(
    "One delivery",
    roles=ORGANIZER,
    response=DELIVERY,
    problems={404: ["webhook_not_found", "delivery_not_found"]},
    tag=TAG,
)
async def get_delivery(request: web.Request) -> web.Response:
    row = await request.app[POOL].fetchrow(
        DELIVERY_BY_ID, delivery_id(request), webhook_id(request), principal(request).id
    )
    if row is None:
        await owned(request)
        raise delivery_not_found()
    return json_response(DELIVERY.dump(row))


@routes.post("/api/v1/webhooks/{id}/deliveries/{delivery_id}/retry")
@endpoint(
    "Send a delivery again",
    roles=ORGANIZER,
    response=DELIVERY,
    status=202,
    problems={404: ["webhook_not_found", "delivery_not_found"]},
    tag=TAG,
    description=(
        "It is attempted again at once (when the endpoint is enabled), with the same "
        "webhook-id and body and a fresh retry schedule, whatever became of it before."
    ),
)
async def retry_delivery(request: web.Request) -> web.Response:
    row = await request.app[POOL].fetchrow(
        RETRY, delivery_id(request), webhook_id(request), principal(request).id
    )
    if row is None:
        await owned(request)
        raise delivery_not_found()
    log.info("webhook_delivery_retried", delivery_id=str(row["id"]))
    return json_response(DELIVERY.dump(row), status=202)


@routes.post("/api/v1/webhooks/{id}/ping")
@endpoint(
    "Send a test message",
    roles=ORGANIZER,
    response=DELIVERY,
    status=202,
    problems={404: ["webhook_not_found"]},
    tag=TAG,
    description=(
        "Queues a `webhook.ping` message to the endpoint, whatever event types it wants; "
        "follow its delivery to see the answer."
    ),
)
async def ping(request: web.Request) -> web.Response:
    endpoint_id = webhook_id(request)
    at = dt.datetime.now(dt.UTC)
    body = envelope(PING, at, {"webhook_id": str(endpoint_id)})
    row = await request.app[POOL].fetchrow(
        PING_INSERT, endpoint_id, principal(request).id, ping_message_id(), body, at
    )
    if row is None:
        raise webhook_not_found()
    return json_response(DELIVERY.dump(row), status=202)
