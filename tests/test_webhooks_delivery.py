"""Webhooks reach a real receiver, signed so that the standardwebhooks library verifies
them."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from eventbook.actors.webhooks import Dispatcher
from eventbook.config import Config
from eventbook.metrics import Metrics
from tests.client import Api, User, eventually, expect
from tests.webhook_receivers import Receiver, receiving


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
    deliveries = await expect(
        await api.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries", organizer), 200
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
    deliveries = await expect(
        await api.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries", organizer), 200
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
    old, recent, newest = await pool.fetch(
        "SELECT id FROM webhook_deliveries WHERE status = 'succeeded' ORDER BY created_at"
    )
    await pool.execute("UPDATE webhook_deliveries SET finished_at = now() - interval '31 days'"
                       " WHERE id = $1", old["id"])
    await pool.execute("UPDATE webhook_deliveries SET finished_at = now() - interval '29 days'"
                       " WHERE id = $1", recent["id"])
    endpoint_id = endpoint["id"]

    await Dispatcher(config, pool, Metrics(), asyncio.Event()).purge_old()

    left = await pool.fetch("SELECT id FROM webhook_deliveries WHERE endpoint_id = $1",
                            uuid.UUID(endpoint_id))
    assert {row["id"] for row in left} == {recent["id"], newest["id"]}
