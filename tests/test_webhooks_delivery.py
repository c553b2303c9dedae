"""Webhooks reach a real receiver, signed so that the standardwebhooks library verifies
them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web

from eventbook.actors.webhooks import Dispatcher
from eventbook.config import Config
from eventbook.metrics import Metrics
from tests.client import Api, User, eventually, expect
from tests.conftest import Inbox
from tests.webhook_receivers import Receiver, once_recorded, receiving

BOOKINGS = 1000


async def register(api: Api, organizer: User, url: str, **fields: Any) -> dict[str, Any]:
    return await expect(
        await api.post("/api/v1/webhooks", organizer, json={"url": url, **fields}), 201
    )


async def test_a_booking_is_delivered_signed_with_the_booking_as_the_api_returns_it(
    webhooks_api: Api, organizer: User, customer: User
) -> None:
    api = webhooks_api
    event = await api.create_event(organizer)
    async with receiving() as receiver:
        endpoint = await register(api, organizer, receiver.url)
        receiver.secrets.append(endpoint["secret"])
        booking = await expect(await api.book(customer, event), 201)
        await eventually(lambda: receiver.verified, timeout=10)
    [got] = receiver.verified
    assert got.verified["type"] == "booking.created"
    assert got.verified["api_version"] == "v1"
    shown = await expect(await api.get(f"/api/v1/bookings/{booking['id']}", customer), 200)
    assert got.verified["data"] == shown
    deliveries = await once_recorded(
        api, organizer, f"/api/v1/webhooks/{endpoint['id']}/deliveries"
    )
    [delivery] = deliveries["items"]
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 1
    assert delivery["message_id"] == got.message_id
    assert delivery["last_status_code"] == 204


async def test_a_receiver_that_fails_gets_the_message_again_later(
    webhooks_api: Api, organizer: User, customer: User
) -> None:
    api = webhooks_api
    event = await api.create_event(organizer)
    receiver = Receiver()
    failures = 2

    async def answer(request: Any) -> Any:
        from aiohttp import web
        return web.Response(status=500 if len(receiver.received) <= failures else 200)

    receiver.answer = answer
    async with receiving(receiver):
        endpoint = await register(api, organizer, receiver.url)
        receiver.secrets.append(endpoint["secret"])
        await expect(await api.book(customer, event), 201)
        await eventually(lambda: len(receiver.received) == failures + 1, timeout=10)
    assert len(receiver.message_ids()) == 1
    deliveries = await once_recorded(
        api, organizer, f"/api/v1/webhooks/{endpoint['id']}/deliveries"
    )
    [delivery] = deliveries["items"]
    assert (delivery["status"], delivery["attempts"]) == ("succeeded", failures + 1)


async def test_deliveries_over_for_longer_than_the_retention_period_are_deleted(
    webhooks_api: Api, config: Config, pool: asyncpg.Pool, organizer: User, customer: User
) -> None:
    api = webhooks_api
    event = await api.create_event(organizer)
    async with receiving() as receiver:
        endpoint = await register(api, organizer, receiver.url)
        for _ in range(3):
            await expect(await api.book(customer, event), 201)
        await eventually(lambda: len(receiver.received) == 3, timeout=10)
    shown = await once_recorded(api, organizer, f"/api/v1/webhooks/{endpoint['id']}/deliveries")
    newest, recent, old = (uuid.UUID(d["id"]) for d in shown["items"])
    await pool.execute("UPDATE webhook_deliveries SET finished_at = now() - interval '31 days'"
                       " WHERE id = $1", old)
    await pool.execute("UPDATE webhook_deliveries SET finished_at = now() - interval '29 days'"
                       " WHERE id = $1", recent)

    await Dispatcher(config, pool, Metrics(), asyncio.Event()).purge_old()

    left = await pool.fetch("SELECT id FROM webhook_deliveries WHERE endpoint_id = $1",
                            uuid.UUID(endpoint["id"]))
    assert {row["id"] for row in left} == {recent, newest}


async def deliveries_of(api: Api, organizer: User, endpoint: dict[str, Any]) -> list[Any]:
    """Every delivery of the endpoint, page after page, as its deliveries list shows them."""
    shown: list[Any] = []
    cursor: str | None = None
    while True:
        params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
        page = await expect(await api.get(
            f"/api/v1/webhooks/{endpoint['id']}/deliveries", organizer, params=params
        ), 200)
        shown.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return shown


async def book_all(api: Api, customers: list[User], event: dict[str, Any],
                   clients: int = 20) -> list[str]:
    """Each customer books one ticket, `clients` bookings in flight at once; the ids."""
    todo = iter(customers)
    booked: list[str] = []

    async def client() -> None:
        for customer in todo:
            booked.append((await expect(await api.book(customer, event), 201))["id"])

    await asyncio.gather(*(client() for _ in range(clients)))
    return booked


async def test_every_booking_of_a_thousand_is_delivered_verified_and_recorded_once(
    webhooks_api: Api, organizer: User, pool: asyncpg.Pool
) -> None:
    """A thousand customers book at once: each booking's booking.created reaches the
    receiver, signed so that it verifies, with its own webhook-id, and the deliveries
    list shows one delivery per booking, succeeded."""
    api = webhooks_api
    event = await api.create_event(organizer, capacity=BOOKINGS)
    customers = await api.seed_users(pool, BOOKINGS)
    async with receiving() as receiver:
        endpoint = await register(api, organizer, receiver.url)
        receiver.secrets.append(endpoint["secret"])
        booked = await book_all(api, customers, event)
        await eventually(lambda: len(receiver.message_ids()) >= BOOKINGS, timeout=60)

    assert [r for r in receiver.received if r.verified is None] == []
    payloads = [r.verified for r in receiver.verified]
    assert {p["type"] for p in payloads} == {"booking.created"}
    assert {p["data"]["id"] for p in payloads} == set(booked)
    ids_of = {booking: {r.message_id for r in receiver.verified
                        if r.verified["data"]["id"] == booking} for booking in booked}
    assert {len(ids) for ids in ids_of.values()} == {1}
    assert len(set().union(*ids_of.values())) == BOOKINGS

    async def recorded() -> list[Any] | None:
        shown = await deliveries_of(api, organizer, endpoint)
        return shown if all(d["status"] != "pending" for d in shown) else None

    deliveries = await eventually(recorded, timeout=30)
    assert len(deliveries) == BOOKINGS
    assert {d["payload"]["data"]["id"] for d in deliveries} == set(booked)
    assert {d["message_id"] for d in deliveries} == set().union(*ids_of.values())
    assert {(d["status"], d["last_status_code"]) for d in deliveries} == {("succeeded", 204)}


async def test_a_receiver_down_for_a_while_gets_every_message_once_it_recovers(
    make_webhooks_api: Callable[..., Awaitable[Api]], organizer: User, pool: asyncpg.Pool
) -> None:
    """While the receiver answers 500, each delivery stays pending with the failed
    attempt recorded; once it answers again every message arrives and is answered 2xx
    once, and every attempt the receiver saw is counted in the deliveries."""
    api = await make_webhooks_api(webhook_retry_schedule=(0.5, 1.0, 2.0, 4.0))
    event = await api.create_event(organizer)
    receiver = Receiver()
    down = True
    accepted: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        if down:
            return web.Response(status=500)
        accepted.append(request.headers["webhook-id"])
        return web.Response(status=204)

    receiver.answer = answer
    async with receiving(receiver):
        endpoint = await register(api, organizer, receiver.url)
        receiver.secrets.append(endpoint["secret"])
        booked = await book_all(api, await api.seed_users(pool, 20), event, clients=5)
        await eventually(lambda: len(receiver.message_ids()) == len(booked))

        async def each_failed_once() -> list[Any] | None:
            # The receiver has each message before its 500 is recorded.
            shown = await deliveries_of(api, organizer, endpoint)
            return shown if all(d["last_status_code"] for d in shown) else None

        while_down = await eventually(each_failed_once)
        down = False
        await eventually(lambda: len(accepted) >= len(booked))
        done = await eventually(lambda: _all_finished(api, organizer, endpoint))

    assert {(d["status"], d["last_status_code"], d["last_error"]) for d in while_down} \
        == {("pending", 500, "answered 500")}
    assert all(d["attempts"] >= 1 and d["next_attempt_at"] for d in while_down)
    assert sorted(accepted) == sorted(receiver.message_ids())
    assert {d["payload"]["data"]["id"] for d in done} == set(booked)
    assert {(d["status"], d["last_status_code"]) for d in done} == {("succeeded", 204)}
    assert min(d["attempts"] for d in done) > 1
    assert sum(d["attempts"] for d in done) == len(receiver.received)


async def _all_finished(api: Api, organizer: User, endpoint: dict[str, Any]) -> list[Any]:
    deliveries = await deliveries_of(api, organizer, endpoint)
    return deliveries if all(d["status"] != "pending" for d in deliveries) else []


async def test_a_hanging_receiver_holds_only_its_own_share_and_never_delays_a_healthy_one(
    make_webhooks_api: Callable[..., Awaitable[Api]], organizer: User, pool: asyncpg.Pool
) -> None:
    """Two endpoints get the same messages; one never answers. The healthy one gets them
    all at once, long before the hanging one could even have been tried with each (one
    attempt in flight per slot, each a full timeout), and the hanging one never has more
    attempts in flight than its bound."""
    timeout, per_endpoint, messages = 1.0, 2, 30
    api = await make_webhooks_api(
        webhook_timeout_seconds=timeout, webhook_endpoint_concurrency=per_endpoint,
        webhook_concurrency=2 * per_endpoint, webhook_retry_schedule=(60.0,),
    )
    event = await api.create_event(organizer)
    hanging = Receiver()
    in_flight = peak = 0

    async def never(request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.Event().wait()
        finally:
            in_flight -= 1
        raise AssertionError("unreachable")

    hanging.answer = never
    customers = await api.seed_users(pool, messages)
    async with receiving(hanging, cancel_on_hang_up=True), receiving() as healthy:
        for receiver in (hanging, healthy):
            receiver.secrets.append((await register(api, organizer, receiver.url))["secret"])
        started = time.monotonic()
        booked = await book_all(api, customers, event, clients=5)
        await eventually(lambda: len(healthy.message_ids()) == len(booked))
        healthy_took = time.monotonic() - started
        hanging_had = len(hanging.received)
        # Past a few timeouts: the slots of the attempts given up are taken again.
        await eventually(lambda: len(hanging.received) >= 3 * per_endpoint)

    assert healthy_took < len(booked) / per_endpoint * timeout
    assert hanging_had < len(booked)
    assert peak == per_endpoint
    assert len(healthy.verified) == len(booked)


async def test_an_endpoint_that_keeps_failing_is_paused_its_owner_told_once_and_resumed(
    make_webhooks_api: Callable[..., Awaitable[Api]], organizer: User, pool: asyncpg.Pool,
    smtp_server: tuple[str, Inbox],
) -> None:
    """After three failed attempts in a row the endpoint is paused for failing and its
    owner gets one mail. Messages that come while it is paused are recorded and wait:
    another endpoint of the organizer gets them, the paused one does not. Enabled again,
    it gets every message that waited."""
    smtp_url, inbox = smtp_server
    api = await make_webhooks_api(
        smtp_url=smtp_url, webhook_pause_after_failures=3, webhook_pause_after_seconds=0,
        webhook_retry_schedule=(0.1, 0.1, 0.1, 0.1, 0.1, 0.1),
    )
    event = await api.create_event(organizer)
    customers = await api.seed_users(pool, 6)
    failing = Receiver()
    up = False

    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=204 if up else 500)

    failing.answer = answer
    async with receiving(failing) as failing, receiving() as witness:
        endpoint = await register(api, organizer, failing.url)
        failing.secrets.append(endpoint["secret"])
        witness.secrets.append((await register(api, organizer, witness.url))["secret"])
        path = f"/api/v1/webhooks/{endpoint['id']}"

        await book_all(api, customers[:1], event)

        async def paused() -> Any:
            shown = await expect(await api.get(path, organizer), 200)
            return shown if shown["status"] == "paused" else None

        shown = await eventually(paused)
        assert shown["paused_reason"] == "failing"
        await eventually(lambda: inbox.mails)
        tried = len(failing.received)

        await book_all(api, customers[1:], event)
        await eventually(lambda: len(witness.message_ids()) == len(customers))
        waiting = await expect(await api.get(
            f"{path}/deliveries", organizer, params={"status": "pending"}
        ), 200)
        assert len(failing.received) == tried
        assert len(waiting["items"]) == len(customers)
        assert sorted(d["attempts"] for d in waiting["items"]) == [0] * 5 + [tried]

        up = True
        await expect(await api.patch(path, organizer, json={"status": "enabled"}), 200)
        await eventually(lambda: failing.message_ids() == witness.message_ids())

    assert tried == 3
    [(to, mail)] = inbox.mails
    assert to == [organizer.email]
    assert mail["Subject"] == "Your webhook endpoint is paused"
    assert endpoint["id"] in mail.get_payload()
