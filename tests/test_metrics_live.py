"""The metrics move when the things they count happen, through the real code paths."""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp
import asyncpg

from eventbook.actors.stream import stream_key
from eventbook.config import Config
from eventbook.embedded import free_port
from tests.client import Api, eventually, metric, metric_becomes, scrape_private_port
from tests.processes import Process, Server, environment


async def test_booking_answers_are_counted_by_outcome(api: Api, organizer, customer) -> None:
    event = await api.create_event(organizer, capacity=1)
    assert (await api.book(customer, event, key="k1")).status == 201
    assert (await api.book(customer, event, key="k1")).status == 200
    assert (await api.book(customer, event)).status == 409
    await metric_becomes(api, "eventbook_bookings_total", 1, outcome="created")
    assert await metric(api, "eventbook_bookings_total", outcome="replayed") == 1
    assert await metric(api, "eventbook_bookings_total", outcome="sold_out") == 1


async def test_a_dead_letter_shows_in_the_dead_letter_gauge_and_the_failed_mails(
    make_api, pool: asyncpg.Pool, config: Config
) -> None:
    api = await make_api(actors=True, mail_failure_rate=1.0, max_attempts=2)
    organizer, customer = await api.register(role="organizer"), await api.register()
    booking = await (await api.book(customer, await api.create_event(organizer))).json()

    async def failed() -> bool:
        return await pool.fetchval(
            "SELECT confirmation_status = 'failed' FROM bookings WHERE id = $1::uuid",
            booking["id"],
        )

    await eventually(failed)
    labels = {"stream": stream_key(config.redis_prefix, "confirmations"), "group": "confirmations"}
    await metric_becomes(api, "eventbook_dead_letters", 1, **labels)
    await metric_becomes(api, "eventbook_mails_total", 2, kind="booking_confirmed",
                         result="failed")


async def test_a_killed_consumer_leaves_its_message_pending_and_the_gauge_shows_it(
    api: Api, config: Config, tmp_path: Path
) -> None:
    organizer, customer = await api.register(role="organizer"), await api.register()
    assert (await api.book(customer, await api.create_event(organizer))).status == 201
    labels = {"stream": stream_key(config.redis_prefix, "confirmations"), "group": "confirmations"}
    # A mail server slow enough that the worker is killed while it holds the message.
    worker = Process(["worker"], environment(config, EVENTBOOK_MAIL_LATENCY_MS="60000"),
                     tmp_path / "worker.log")
    try:
        await eventually(lambda: _equals(api, "eventbook_stream_pending", labels, 1), timeout=60)
    finally:
        worker.stop(signal.SIGKILL)
    await metric_becomes(api, "eventbook_stream_lag", 0, **labels)
    assert await metric(api, "eventbook_stream_pending", **labels) == 1


async def test_a_worker_serves_its_own_metrics(config: Config, tmp_path: Path) -> None:
    port = free_port()
    worker = Process(["worker", "--metrics-port", str(port)], environment(config),
                     tmp_path / "worker.log")
    try:
        worker.wait_for_output("metrics_listening")
        text, ready = await scrape_private_port(port)
        assert ready == 200
        assert "eventbook_stream_length" in text
    finally:
        assert worker.stop() == 0


async def test_serve_serves_its_metrics_on_a_private_port_and_not_on_the_api_port(
    config: Config, tmp_path: Path
) -> None:
    port = free_port()
    server = Server(environment(config), tmp_path / "serve.log", "--no-actors",
                    "--metrics-port", str(port))
    try:
        await server.wait_ready()
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.url}/metrics") as answer:
                assert answer.status == 404
                assert (await answer.json())["code"] == "not_found"
            async with session.get(f"http://127.0.0.1:{port}/metrics") as answer:
                assert answer.status == 200
                assert "eventbook_http_requests_total" in await answer.text()
    finally:
        assert server.stop() == 0


async def _equals(api: Api, name: str, labels: dict, value: float) -> bool:
    return await metric(api, name, **labels) == value
