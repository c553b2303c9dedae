"""Organizer webhooks through the API: endpoints, their deliveries, what is sent and to
whom, and the addresses deliveries may not reach."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from aiohttp import web

from tests.assertions import assert_problem
from tests.client import Api, User, eventually, expect
from tests.test_webhooks_delivery import register
from tests.webhook_receivers import Receiver, once_recorded, receiving

MakeApi = Callable[..., Awaitable[Api]]

# An address literal: public, and accepted without asking DNS.
PUBLIC_URL = "https://1.1.1.1/hooks"


def hook_path(endpoint: dict[str, Any] | str, *rest: str) -> str:
    endpoint_id = endpoint["id"] if isinstance(endpoint, dict) else endpoint
    return "/".join([f"/api/v1/webhooks/{endpoint_id}", *rest])


async def deliveries(
    api: Api, organizer: User, endpoint: dict[str, Any], **params: Any
) -> list[dict[str, Any]]:
    page = await expect(
        await api.get(hook_path(endpoint, "deliveries"), organizer, params=params), 200
    )
    items: list[dict[str, Any]] = page["items"]
    return items


async def delivery_where(
    api: Api, organizer: User, endpoint: dict[str, Any],
    check: Callable[[dict[str, Any]], bool], timeout: float = 10,
) -> dict[str, Any]:
    """Wait until the endpoint's (only) delivery passes `check`; that delivery."""

    async def found() -> dict[str, Any] | None:
        items = await deliveries(api, organizer, endpoint)
        return items[0] if len(items) == 1 and check(items[0]) else None

    return await eventually(found, timeout=timeout)


async def ping(api: Api, organizer: User, endpoint: dict[str, Any]) -> dict[str, Any]:
    sent: dict[str, Any] = await expect(
        await api.post(hook_path(endpoint, "ping"), organizer), 202
    )
    return sent


@asynccontextmanager
async def endpoint_receiving(
    api: Api, organizer: User, receiver: Receiver | None = None, **fields: Any
) -> AsyncIterator[tuple[dict[str, Any], Receiver]]:
    """A receiver on loopback, registered as an endpoint of `organizer` with `fields`, and
    verifying with its secret."""
    async with receiving(receiver) as receiver:
        endpoint = await register(api, organizer, receiver.url, **fields)
        receiver.secrets.append(endpoint["secret"])
        yield endpoint, receiver


def types(receiver: Receiver) -> list[str]:
    return [payload["type"] for payload in receiver.payloads()]


async def webhook_rows(pool: asyncpg.Pool) -> list[str]:
    """The kinds of the webhooks outbox rows written since the last call (taken away)."""
    rows = await pool.fetch(
        "DELETE FROM outbox WHERE topic = 'webhooks' RETURNING id, kind"
    )
    return [row["kind"] for row in sorted(rows, key=lambda row: row["id"])]


# -- endpoints ------------------------------------------------------------------------


async def test_an_organizer_registers_an_endpoint_and_sees_its_secret_only_then(
    api: Api, organizer: User
) -> None:
    made = await register(api, organizer, PUBLIC_URL, description="CRM")
    assert made["secret"].startswith("whsec_") and len(made["secret"]) > 40
    assert made["url"] == PUBLIC_URL and made["description"] == "CRM"
    assert (made["event_types"], made["event_ids"]) == (["*"], None)
    assert (made["status"], made["paused_reason"], made["paused_at"]) == ("enabled", None, None)
    assert made["consecutive_failures"] == 0 and made["previous_secret_expires_at"] is None

    shown = await expect(await api.get(hook_path(made), organizer), 200)
    assert "secret" not in shown
    assert shown == {k: v for k, v in made.items() if k != "secret"}
    other = await register(api, organizer, PUBLIC_URL)
    assert other["secret"] != made["secret"]


async def test_an_endpoint_may_be_made_paused_for_some_types_and_events(
    api: Api, organizer: User
) -> None:
    event = await api.create_event(organizer)
    made = await register(
        api, organizer, PUBLIC_URL, status="paused", event_ids=[event["id"], event["id"]],
        event_types=["booking.created", "event.cancelled", "booking.created"],
    )
    assert made["event_types"] == ["booking.created", "event.cancelled"]
    assert made["event_ids"] == [event["id"]]
    assert (made["status"], made["paused_reason"]) == ("paused", "owner")
    assert made["paused_at"] is not None
    everything = await register(api, organizer, PUBLIC_URL, event_types=["*", "hold.expired"])
    assert everything["event_types"] == ["*"]


async def test_a_body_outside_the_rules_is_a_validation_problem(
    api: Api, organizer: User
) -> None:
    too_many_ids = [str(uuid.uuid4()) for _ in range(101)]
    for body, field in [
        ({}, "url"),
        ({"url": ""}, "url"),
        ({"url": 42}, "url"),
        ({"url": "https://1.1.1.1/" + "a" * 2048}, "url"),
        ({"url": PUBLIC_URL, "event_types": []}, "event_types"),
        ({"url": PUBLIC_URL, "event_types": ["booking.refunded"]}, "event_types"),
        ({"url": PUBLIC_URL, "event_types": "booking.created"}, "event_types"),
        ({"url": PUBLIC_URL, "event_types": ["webhook.ping"]}, "event_types"),
        ({"url": PUBLIC_URL, "event_ids": []}, "event_ids"),
        ({"url": PUBLIC_URL, "event_ids": ["not-an-id"]}, "event_ids"),
        ({"url": PUBLIC_URL, "event_ids": too_many_ids}, "event_ids"),
        ({"url": PUBLIC_URL, "description": "d" * 501}, "description"),
        ({"url": PUBLIC_URL, "status": "off"}, "status"),
        ({"url": PUBLIC_URL, "secret": "whsec_mine"}, "secret"),
    ]:
        answer = await api.post("/api/v1/webhooks", organizer, json=body)
        problem = await assert_problem(answer, 422, "validation_failed")
        assert field in problem["errors"], (body, problem)
    page = await expect(await api.get("/api/v1/webhooks", organizer), 200)
    assert page["items"] == []


REFUSED_ADDRESSES = [
    "https://127.0.0.1/hooks",
    "https://localhost/hooks",
    "https://[::1]/hooks",
    "https://[::ffff:127.0.0.1]/hooks",
    "https://10.0.0.1/hooks",
    "https://192.168.1.1/hooks",
    "https://172.16.0.1/hooks",
    "https://169.254.169.254/latest/meta-data/",
    "https://0.0.0.0/hooks",
    "https://100.64.0.1/hooks",
    "https://224.0.0.1/hooks",
    "https://[ff02::1]/hooks",
    "https://[fd00::1]/hooks",
    "https://[fe80::1]/hooks",
    "https://2130706433/hooks",
]


async def test_urls_reaching_non_public_addresses_are_refused(
    make_api: MakeApi, organizer: User
) -> None:
    api = await make_api(webhook_allow_private=False, webhook_allow_http=True)
    for url in REFUSED_ADDRESSES:
        answer = await api.post("/api/v1/webhooks", organizer, json={"url": url})
        problem = await assert_problem(answer, 422, "webhook_url_refused")
        assert "may not reach" in problem["detail"] or "does not resolve" in problem["detail"]
    answer = await api.post("/api/v1/webhooks", organizer,
                            json={"url": "https://no-such-host.invalid/hooks"})
    assert "does not resolve" in (await assert_problem(answer, 422, "webhook_url_refused"))[
        "detail"]
    page = await expect(await api.get("/api/v1/webhooks", organizer), 200)
    assert page["items"] == []
    await register(api, organizer, "https://[2606:4700:4700::1111]/hooks")


async def test_urls_of_other_forms_are_refused(
    make_api: MakeApi, organizer: User
) -> None:
    api = await make_api(webhook_allow_private=True, webhook_allow_http=False)
    for url, why in [
        ("http://1.1.1.1/hooks", "https://"),
        ("ftp://1.1.1.1/hooks", "https://"),
        ("https://user:pass@1.1.1.1/hooks", "user name or password"),
        ("https://1.1.1.1/hooks#section", "fragment"),
        ("https:///hooks", "no host"),
    ]:
        answer = await api.post("/api/v1/webhooks", organizer, json={"url": url})
        assert why in (await assert_problem(answer, 422, "webhook_url_refused"))["detail"]


async def test_http_urls_are_taken_only_when_the_setting_allows_them(
    make_api: MakeApi, organizer: User
) -> None:
    strict = await make_api(webhook_allow_http=False)
    answer = await strict.post("/api/v1/webhooks", organizer,
                               json={"url": "http://1.1.1.1/hooks"})
    await assert_problem(answer, 422, "webhook_url_refused")
    lenient = await make_api(webhook_allow_http=True, webhook_allow_private=False)
    await register(lenient, organizer, "http://1.1.1.1/hooks")
    answer = await lenient.post("/api/v1/webhooks", organizer,
                                json={"url": "http://127.0.0.1/hooks"})
    await assert_problem(answer, 422, "webhook_url_refused")


async def test_event_ids_must_all_be_the_organizers_events(
    api: Api, organizer: User
) -> None:
    mine = await api.create_event(organizer)
    rival = await api.register(role="organizer")
    theirs = await api.create_event(rival)
    for ids in ([theirs["id"]], [mine["id"], theirs["id"]], [str(uuid.uuid4())]):
        answer = await api.post("/api/v1/webhooks", organizer,
                                json={"url": PUBLIC_URL, "event_ids": ids})
        await assert_problem(answer, 422, "unknown_event")
    made = await register(api, organizer, PUBLIC_URL, event_ids=[mine["id"]])
    answer = await api.patch(hook_path(made), organizer, json={"event_ids": [theirs["id"]]})
    await assert_problem(answer, 422, "unknown_event")
    shown = await expect(await api.get(hook_path(made), organizer), 200)
    assert shown["event_ids"] == [mine["id"]]


async def test_customers_have_no_webhooks(api: Api, customer: User) -> None:
    answer = await api.post("/api/v1/webhooks", customer, json={"url": PUBLIC_URL})
    await assert_problem(answer, 403, "forbidden_role")
    await assert_problem(await api.get("/api/v1/webhooks", customer), 403, "forbidden_role")
    await assert_problem(await api.get("/api/v1/webhooks"), 401, "unauthorized")


async def test_another_organizers_endpoint_is_not_found(api: Api, organizer: User) -> None:
    endpoint = await register(api, organizer, PUBLIC_URL)
    delivery = await ping(api, organizer, endpoint)
    rival = await api.register(role="organizer")
    for method, path, body in [
        ("GET", hook_path(endpoint), None),
        ("PATCH", hook_path(endpoint), {"status": "paused"}),
        ("DELETE", hook_path(endpoint), None),
        ("POST", hook_path(endpoint, "secret", "rotate"), None),
        ("GET", hook_path(endpoint, "deliveries"), None),
        ("GET", hook_path(endpoint, "deliveries", delivery["id"]), None),
        ("POST", hook_path(endpoint, "deliveries", delivery["id"], "retry"), None),
        ("POST", hook_path(endpoint, "ping"), None),
    ]:
        answer = await api.request(method, path, rival, json=body)
        await assert_problem(answer, 404, "webhook_not_found")
    assert (await expect(await api.get("/api/v1/webhooks", rival), 200))["items"] == []
    shown = await expect(await api.get(hook_path(endpoint), organizer), 200)
    assert shown["status"] == "enabled" and shown["previous_secret_expires_at"] is None
    assert len(await deliveries(api, organizer, endpoint)) == 1


async def test_unknown_endpoints_and_deliveries_are_not_found(
    api: Api, organizer: User
) -> None:
    endpoint = await register(api, organizer, PUBLIC_URL)
    other = await register(api, organizer, PUBLIC_URL)
    delivery = await ping(api, organizer, other)
    for path in (hook_path(str(uuid.uuid4())), hook_path("not-an-id")):
        await assert_problem(await api.get(path, organizer), 404, "webhook_not_found")
    for delivery_id in (str(uuid.uuid4()), "not-an-id", delivery["id"]):
        path = hook_path(endpoint, "deliveries", delivery_id)
        await assert_problem(await api.get(path, organizer), 404, "delivery_not_found")
        await assert_problem(await api.post(path + "/retry", organizer), 404,
                             "delivery_not_found")


async def test_the_list_pages_through_the_organizers_endpoints_in_the_order_made(
    api: Api, organizer: User
) -> None:
    made = [await register(api, organizer, f"{PUBLIC_URL}/{n}") for n in range(3)]
    rival = await api.register(role="organizer")
    theirs = await register(api, rival, PUBLIC_URL)
    first = await expect(await api.get("/api/v1/webhooks", organizer, params={"limit": 2}), 200)
    assert first["next_cursor"] is not None
    rest = await expect(await api.get(
        "/api/v1/webhooks", organizer, params={"limit": 2, "cursor": first["next_cursor"]}
    ), 200)
    assert rest["next_cursor"] is None
    listed = first["items"] + rest["items"]
    assert [e["id"] for e in listed] == [e["id"] for e in made]
    assert all("secret" not in e for e in listed)
    [only] = (await expect(await api.get("/api/v1/webhooks", rival), 200))["items"]
    assert only["id"] == theirs["id"]
    answer = await api.get("/api/v1/webhooks", organizer, params={"cursor": "nonsense!"})
    await assert_problem(answer, 422, "validation_failed")


async def test_a_change_touches_only_the_fields_sent_and_rechecks_the_url(
    api: Api, organizer: User
) -> None:
    event = await api.create_event(organizer)
    endpoint = await register(api, organizer, PUBLIC_URL, description="CRM")

    async def change(**fields: Any) -> dict[str, Any]:
        changed: dict[str, Any] = await expect(
            await api.patch(hook_path(endpoint), organizer, json=fields), 200
        )
        return changed

    answer = await api.patch(hook_path(endpoint), organizer,
                             json={"url": "https://169.254.169.254/latest"})
    await assert_problem(answer, 422, "webhook_url_refused")
    answer = await api.patch(hook_path(endpoint), organizer, json={"event_types": []})
    await assert_problem(answer, 422, "validation_failed")
    assert (await expect(await api.get(hook_path(endpoint), organizer), 200))["url"] == PUBLIC_URL

    changed = await change(url="https://8.8.8.8/new")
    assert (changed["url"], changed["description"]) == ("https://8.8.8.8/new", "CRM")
    changed = await change(event_types=["booking.created", "booking.cancelled"])
    assert changed["event_types"] == ["booking.created", "booking.cancelled"]
    changed = await change(event_ids=[event["id"]])
    assert (changed["event_ids"], changed["event_types"]) == (
        [event["id"]], ["booking.created", "booking.cancelled"])
    assert (await change(event_ids=None))["event_ids"] is None
    assert (await change(description=""))["description"] == ""

    paused = await change(status="paused")
    assert (paused["status"], paused["paused_reason"]) == ("paused", "owner")
    assert paused["paused_at"] is not None
    assert (await change(description="still paused"))["paused_at"] == paused["paused_at"]
    enabled = await change(status="enabled")
    assert (enabled["status"], enabled["paused_reason"], enabled["paused_at"]) == (
        "enabled", None, None)
    assert enabled["url"] == "https://8.8.8.8/new"
    assert dt.datetime.fromisoformat(enabled["updated_at"]) > dt.datetime.fromisoformat(
        endpoint["updated_at"])


async def test_a_deleted_endpoint_loses_its_deliveries_and_gets_nothing_more(
    webhooks_api: Api, pool: asyncpg.Pool, organizer: User, customer: User
) -> None:
    api = webhooks_api
    event = await api.create_event(organizer)
    async with endpoint_receiving(api, organizer) as (gone, receiver), \
            endpoint_receiving(api, organizer) as (_, witness):
        await expect(await api.book(customer, event), 201)
        await eventually(lambda: receiver.verified and witness.verified)
        assert (await api.delete(hook_path(gone), organizer)).status == 204
        await expect(await api.book(customer, event), 201)
        await eventually(lambda: len(witness.verified) == 2)
    assert types(receiver) == ["booking.created"]
    await assert_problem(await api.get(hook_path(gone), organizer), 404, "webhook_not_found")
    answer = await api.get(hook_path(gone, "deliveries"), organizer)
    await assert_problem(answer, 404, "webhook_not_found")
    assert await pool.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1", uuid.UUID(gone["id"])
    ) == 0
    await assert_problem(await api.delete(hook_path(gone), organizer), 404, "webhook_not_found")


# -- secrets --------------------------------------------------------------------------


async def test_after_a_rotation_receivers_with_the_old_or_the_new_secret_both_verify(
    webhooks_api: Api, organizer: User
) -> None:
    api = webhooks_api
    async with endpoint_receiving(api, organizer) as (endpoint, receiver):
        old = endpoint["secret"]
        rotated = await expect(
            await api.post(hook_path(endpoint, "secret", "rotate"), organizer), 200
        )
        new = rotated["secret"]
        await ping(api, organizer, endpoint)
        await eventually(lambda: receiver.received)
    assert new.startswith("whsec_") and new != old
    until = dt.datetime.fromisoformat(rotated["previous_secret_expires_at"])
    assert dt.timedelta(hours=23) < until - dt.datetime.now(dt.UTC) <= dt.timedelta(days=1)
    shown = await expect(await api.get(hook_path(endpoint), organizer), 200)
    assert shown["previous_secret_expires_at"] == rotated["previous_secret_expires_at"]
    [got] = receiver.received
    assert Receiver([old]).verify(got.body, got.headers) is not None
    assert Receiver([new]).verify(got.body, got.headers) is not None


async def test_without_a_grace_period_only_the_new_secret_verifies(
    make_webhooks_api: MakeApi, organizer: User
) -> None:
    api = await make_webhooks_api(webhook_secret_grace_seconds=0)
    async with endpoint_receiving(api, organizer) as (endpoint, receiver):
        old = endpoint["secret"]
        rotated = await expect(
            await api.post(hook_path(endpoint, "secret", "rotate"), organizer), 200
        )
        await ping(api, organizer, endpoint)
        await eventually(lambda: receiver.received)
    [got] = receiver.received
    assert Receiver([old]).verify(got.body, got.headers) is None
    assert Receiver([rotated["secret"]]).verify(got.body, got.headers) is not None


# -- deliveries -----------------------------------------------------------------------


async def test_a_ping_is_delivered_signed_whatever_types_the_endpoint_wants(
    webhooks_api: Api, organizer: User
) -> None:
    api = webhooks_api
    async with endpoint_receiving(
        api, organizer, event_types=["booking.created"]
    ) as (endpoint, receiver):
        queued = await ping(api, organizer, endpoint)
        assert (queued["status"], queued["event_type"]) == ("pending", "webhook.ping")
        await eventually(lambda: receiver.verified)
    [got] = receiver.verified
    assert got.verified["type"] == "webhook.ping"
    assert got.verified["data"] == {"webhook_id": endpoint["id"]}
    delivery = await once_recorded(
        api, organizer, hook_path(endpoint, "deliveries", queued["id"])
    )
    assert delivery["payload"] == got.verified
    assert delivery["message_id"] == got.message_id == queued["message_id"]
    assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == (
        "succeeded", 1, 204)
    assert delivery["webhook_id"] == endpoint["id"]
    assert delivery["finished_at"] is not None and delivery["next_attempt_at"] is None


async def test_deliveries_are_listed_newest_first_by_status_and_in_pages(
    webhooks_api: Api, organizer: User
) -> None:
    api = webhooks_api
    async with endpoint_receiving(api, organizer) as (endpoint, receiver):
        sent = [await ping(api, organizer, endpoint) for _ in range(3)]
        await eventually(lambda: len(receiver.verified) == 3)
        await eventually(lambda: _all_succeeded(api, organizer, endpoint))
        await expect(
            await api.patch(hook_path(endpoint), organizer, json={"status": "paused"}), 200
        )
        waiting = await ping(api, organizer, endpoint)
    newest_first = [waiting["id"], *reversed([d["id"] for d in sent])]
    assert [d["id"] for d in await deliveries(api, organizer, endpoint)] == newest_first
    assert [d["id"] for d in await deliveries(api, organizer, endpoint, status="pending")] == [
        waiting["id"]]
    succeeded = await deliveries(api, organizer, endpoint, status="succeeded")
    assert [d["id"] for d in succeeded] == newest_first[1:]
    assert await deliveries(api, organizer, endpoint, status="failed") == []

    path = hook_path(endpoint, "deliveries")
    first = await expect(await api.get(path, organizer, params={"limit": 3}), 200)
    rest = await expect(await api.get(
        path, organizer, params={"limit": 3, "cursor": first["next_cursor"]}), 200)
    assert [d["id"] for d in first["items"] + rest["items"]] == newest_first
    assert rest["next_cursor"] is None
    by_status = await expect(await api.get(
        path, organizer, params={"limit": 2, "status": "succeeded"}), 200)
    more = await expect(await api.get(path, organizer, params={
        "limit": 2, "status": "succeeded", "cursor": by_status["next_cursor"]}), 200)
    assert [d["id"] for d in by_status["items"] + more["items"]] == newest_first[1:]

    for params, field in (({"cursor": "bm90IGEgY3Vyc29y"}, "cursor"),
                          ({"cursor": "%%%"}, "cursor"), ({"status": "lost"}, "status"),
                          ({"limit": 0}, "limit")):
        problem = await assert_problem(await api.get(path, organizer, params=params), 422,
                                       "validation_failed")
        assert field in problem["errors"]


async def _all_succeeded(api: Api, organizer: User, endpoint: dict[str, Any]) -> bool:
    return all(d["status"] == "succeeded" for d in await deliveries(api, organizer, endpoint))


async def test_a_failed_delivery_retried_by_hand_is_sent_again_with_a_fresh_schedule(
    webhooks_api: Api, organizer: User
) -> None:
    api = webhooks_api
    receiver = Receiver()
    down = True

    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=503 if down else 200)

    receiver.answer = answer
    async with endpoint_receiving(api, organizer, receiver) as (endpoint, receiver):
        queued = await ping(api, organizer, endpoint)
        failed = await delivery_where(api, organizer, endpoint,
                                      lambda d: d["status"] == "failed")
        assert (failed["attempts"], failed["last_status_code"]) == (4, 503)
        assert failed["last_error"] == "answered 503" and failed["next_attempt_at"] is None
        down = False
        retried = await expect(
            await api.post(hook_path(endpoint, "deliveries", queued["id"], "retry"), organizer),
            202,
        )
        assert (retried["status"], retried["attempts"]) == ("pending", 0)
        done = await delivery_where(api, organizer, endpoint,
                                    lambda d: d["status"] == "succeeded")
    assert (done["attempts"], done["last_status_code"], done["last_error"]) == (1, 200, None)
    assert len(receiver.received) == 5
    assert receiver.message_ids() == {queued["message_id"]}


# -- what is delivered ----------------------------------------------------------------


async def test_a_booking_made_by_confirming_a_hold_is_delivered_as_booking_created(
    webhooks_api: Api, organizer: User, customer: User
) -> None:
    api = webhooks_api
    event = await api.create_event(organizer)
    async with endpoint_receiving(api, organizer) as (_, receiver):
        held = await expect(await api.hold(customer, event, quantity=2), 201)
        booking = await expect(await api.confirm(customer, held), 201)
        await eventually(lambda: receiver.verified)
    [payload] = receiver.payloads()
    assert payload["type"] == "booking.created"
    assert payload["data"] == await expect(
        await api.get(f"/api/v1/bookings/{booking['id']}", customer), 200)


async def test_a_cancelled_booking_is_delivered_as_the_api_shows_it(
    webhooks_api: Api, organizer: User, customer: User
) -> None:
    api = webhooks_api
    event = await api.create_event(organizer)
    async with endpoint_receiving(api, organizer) as (_, receiver):
        booking = await expect(await api.book(customer, event, quantity=2), 201)
        await expect(await api.post(f"/api/v1/bookings/{booking['id']}/cancel", customer), 200)
        await eventually(lambda: "booking.cancelled" in types(receiver))
    [cancelled] = [p for p in receiver.payloads() if p["type"] == "booking.cancelled"]
    shown = await expect(await api.get(f"/api/v1/bookings/{booking['id']}", customer), 200)
    assert shown["status"] == "cancelled"
    assert cancelled["data"] == shown


async def test_an_expired_hold_is_delivered_as_hold_expired(
    make_webhooks_api: MakeApi, organizer: User, customer: User
) -> None:
    api = await make_webhooks_api(actors=("relay", "webhooks", "holds"), hold_seconds=1)
    event = await api.create_event(organizer)
    async with endpoint_receiving(api, organizer) as (_, receiver):
        held = await expect(await api.hold(customer, event, quantity=3), 201)
        await eventually(lambda: receiver.verified)
    [payload] = receiver.payloads()
    assert payload["type"] == "hold.expired"
    shown = await expect(await api.get(f"/api/v1/holds/{held['id']}", customer), 200)
    assert shown["status"] == "expired"
    assert payload["data"] == shown


async def test_any_change_of_an_event_is_delivered_as_event_updated(
    webhooks_api: Api, organizer: User
) -> None:
    api = webhooks_api
    event = await api.create_event(organizer)
    async with endpoint_receiving(api, organizer) as (_, receiver):
        await expect(await api.patch(f"/api/v1/events/{event['id']}", organizer,
                                     json={"description": "Doors at seven"}), 200)
        await eventually(lambda: receiver.verified)
    [payload] = receiver.payloads()
    assert payload["type"] == "event.updated"
    assert payload["data"] == await api.get_event(event)
    assert (payload["data"]["description"], payload["data"]["version"]) == (
        "Doors at seven", event["version"] + 1)


async def test_a_cancelled_event_is_delivered_as_event_cancelled(
    webhooks_api: Api, organizer: User, customer: User
) -> None:
    api = webhooks_api
    event = await api.create_event(organizer)
    async with endpoint_receiving(api, organizer, event_types=["event.cancelled"]) as (
        _, receiver
    ):
        await expect(await api.book(customer, event), 201)
        await expect(await api.post(f"/api/v1/events/{event['id']}/cancel", organizer), 200)
        await eventually(lambda: receiver.verified)
    [payload] = receiver.payloads()
    assert payload["type"] == "event.cancelled"
    assert payload["data"] == await api.get_event(event)
    assert payload["data"]["status"] == "cancelled"


async def test_a_cancelled_event_stands_for_its_bookings(
    api: Api, pool: asyncpg.Pool, organizer: User, customer: User
) -> None:
    event = await api.create_event(organizer)
    await register(api, organizer, PUBLIC_URL)
    for _ in range(2):
        await expect(await api.book(customer, event), 201)
    assert await webhook_rows(pool) == ["booking.created", "booking.created"]
    await expect(await api.post(f"/api/v1/events/{event['id']}/cancel", organizer), 200)
    assert await webhook_rows(pool) == ["event.cancelled"]


async def test_an_organizer_without_endpoints_causes_no_webhook_messages(
    api: Api, pool: asyncpg.Pool, organizer: User, customer: User
) -> None:
    async def every_change(organizer: User) -> list[str]:
        event = await api.create_event(organizer)
        booking = await expect(await api.book(customer, event), 201)
        await expect(await api.post(f"/api/v1/bookings/{booking['id']}/cancel", customer), 200)
        held = await expect(await api.hold(customer, event, quantity=1), 201)
        await expect(await api.confirm(customer, held), 201)
        await expect(await api.patch(f"/api/v1/events/{event['id']}", organizer,
                                     json={"description": "New"}), 200)
        await expect(await api.post(f"/api/v1/events/{event['id']}/cancel", organizer), 200)
        return await webhook_rows(pool)

    assert await every_change(organizer) == []
    listening = await api.register(role="organizer")
    await register(api, listening, PUBLIC_URL)
    assert await every_change(listening) == [
        "booking.created", "booking.cancelled", "booking.created", "event.updated",
        "event.cancelled",
    ]


async def test_an_endpoint_gets_only_the_types_it_asked_for(
    webhooks_api: Api, organizer: User, customer: User
) -> None:
    api = webhooks_api
    event = await api.create_event(organizer)
    async with endpoint_receiving(
        api, organizer, event_types=["booking.created"]
    ) as (only_bookings, receiver), endpoint_receiving(api, organizer) as (_, witness):
        booking = await expect(await api.book(customer, event), 201)
        await expect(await api.post(f"/api/v1/bookings/{booking['id']}/cancel", customer), 200)
        await expect(await api.patch(f"/api/v1/events/{event['id']}", organizer,
                                     json={"description": "New"}), 200)
        await eventually(lambda: len(witness.verified) == 3)
        await eventually(lambda: receiver.verified)
    assert sorted(types(witness)) == ["booking.cancelled", "booking.created", "event.updated"]
    assert types(receiver) == ["booking.created"]
    assert [d["event_type"] for d in await deliveries(api, organizer, only_bookings)] == [
        "booking.created"]


async def test_an_endpoint_for_some_events_hears_only_of_those(
    webhooks_api: Api, organizer: User, customer: User
) -> None:
    api = webhooks_api
    chosen = await api.create_event(organizer)
    other = await api.create_event(organizer)
    async with endpoint_receiving(
        api, organizer, event_ids=[chosen["id"]]
    ) as (endpoint, receiver), endpoint_receiving(api, organizer) as (_, witness):
        await expect(await api.book(customer, other), 201)
        await expect(await api.book(customer, chosen), 201)
        await eventually(lambda: len(witness.verified) == 2)
        await eventually(lambda: receiver.verified)
    [payload] = receiver.payloads()
    assert payload["data"]["event_id"] == chosen["id"]
    assert len(await deliveries(api, organizer, endpoint)) == 1


async def test_an_endpoint_made_after_a_change_does_not_hear_of_it(
    webhooks_api: Api, organizer: User, customer: User
) -> None:
    api = webhooks_api
    event = await api.create_event(organizer)
    async with endpoint_receiving(api, organizer) as (_, earlier):
        before = await expect(await api.book(customer, event), 201)
        async with endpoint_receiving(api, organizer) as (later_endpoint, later):
            after = await expect(await api.book(customer, event), 201)
            await eventually(lambda: len(earlier.verified) == 2 and later.verified)
    assert {p["data"]["id"] for p in earlier.payloads()} == {before["id"], after["id"]}
    assert [p["data"]["id"] for p in later.payloads()] == [after["id"]]
    assert len(await deliveries(api, organizer, later_endpoint)) == 1


async def test_a_paused_endpoints_deliveries_wait_until_it_is_enabled(
    webhooks_api: Api, organizer: User, customer: User
) -> None:
    api = webhooks_api
    event = await api.create_event(organizer)
    async with endpoint_receiving(api, organizer, status="paused") as (paused, receiver), \
            endpoint_receiving(api, organizer) as (_, witness):
        await expect(await api.book(customer, event), 201)
        await eventually(lambda: witness.verified)
        [waiting] = await deliveries(api, organizer, paused)
        assert (waiting["status"], waiting["attempts"]) == ("pending", 0)
        assert receiver.received == []
        await expect(
            await api.patch(hook_path(paused), organizer, json={"status": "enabled"}), 200
        )
        await eventually(lambda: receiver.verified)
    assert receiver.message_ids() == witness.message_ids()
    recorded = await once_recorded(api, organizer, hook_path(paused, "deliveries"))
    assert recorded["items"][0]["status"] == "succeeded"


# -- where deliveries may go ----------------------------------------------------------


async def test_a_loopback_endpoint_is_refused_at_delivery_once_private_addresses_are_not_allowed(
    make_api: MakeApi, make_webhooks_api: MakeApi, organizer: User
) -> None:
    lenient = await make_api(webhook_allow_private=True, webhook_allow_http=True)
    strict = await make_webhooks_api(webhook_allow_private=False)
    async with receiving() as receiver:
        for host in ("127.0.0.1", "localhost"):
            url = receiver.url.replace("127.0.0.1", host)
            endpoint = await register(lenient, organizer, url)
            await ping(strict, organizer, endpoint)
            delivery = await delivery_where(strict, organizer, endpoint,
                                            lambda d: d["last_error"] is not None)
            assert delivery["last_status_code"] is None
            assert f"{host} resolves to an address webhooks may not reach" in (
                delivery["last_error"]), delivery["last_error"]
            assert delivery["status"] in ("pending", "failed")
    assert receiver.received == []


async def test_a_loopback_name_is_delivered_to_while_private_addresses_are_allowed(
    webhooks_api: Api, organizer: User
) -> None:
    async with receiving() as receiver:
        url = receiver.url.replace("127.0.0.1", "localhost")
        endpoint = await register(webhooks_api, organizer, url)
        receiver.secrets.append(endpoint["secret"])
        await ping(webhooks_api, organizer, endpoint)
        await eventually(lambda: receiver.verified)


async def test_a_redirect_is_not_followed(webhooks_api: Api, organizer: User) -> None:
    api = webhooks_api
    redirecting = Receiver()
    async with receiving() as elsewhere:

        async def answer(request: web.Request) -> web.Response:
            return web.Response(status=307, headers={"Location": elsewhere.url})

        redirecting.answer = answer
        async with endpoint_receiving(api, organizer, redirecting) as (endpoint, _):
            await ping(api, organizer, endpoint)
            failed = await delivery_where(api, organizer, endpoint,
                                          lambda d: d["status"] == "failed")
    assert elsewhere.received == []
    assert len(redirecting.verified) == 4
    assert (failed["last_status_code"], failed["last_error"]) == (307, "answered 307")
