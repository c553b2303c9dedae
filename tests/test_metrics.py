"""GET /metrics: who may scrape it and where, request counts by route pattern, domain
counters, and the outbox and stream gauges a background task refreshes."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from eventbook import connections
from eventbook.actors.stream import dead_letter_key, stream_key
from eventbook.app import create_app
from eventbook.bookings import BOOK_OUTCOMES
from eventbook.config import Config
from eventbook.embedded import free_port
from eventbook.keys import METRICS, REDIS
from eventbook.metrics import BOOKING_OUTCOMES, WEBHOOK_BACKLOG, Metrics
from tests.assertions import assert_problem
from tests.client import (
    Api,
    eventually,
    expect,
    metric,
    metric_becomes,
    metrics_headers,
    scrape_private_port,
)
from tests.seed import insert_event, insert_webhook_deliveries, insert_webhook_endpoint
from tests.webhook_receivers import Receiver, receiving

EVENT_ROUTE = "/api/v1/events/{id}"


async def test_metrics_are_not_served_on_the_api_port_without_a_metrics_token(
    make_api: Callable[..., Awaitable[Api]],
) -> None:
    api = await make_api(metrics_token=None)
    await assert_problem(await api.get("/metrics"), 404, "not_found")
    paths = (await (await api.get("/openapi.json")).json())["paths"]
    assert "/metrics" not in paths


async def test_a_scrape_needs_the_metrics_token(api: Api, customer) -> None:
    missing = await api.get("/metrics")
    await assert_problem(missing, 401, "unauthorized")
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    for wrong in ("Bearer not-the-token", f"Bearer {customer.token}", "Basic bWV0cmljcw=="):
        answer = await api.get("/metrics", headers={"Authorization": wrong})
        code = "unauthorized" if wrong.startswith("Basic") else "invalid_token"
        await assert_problem(answer, 401, code)
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await api.get("/metrics", headers=metrics_headers(api))).status == 200


async def test_the_metrics_token_is_documented_as_its_own_scheme(api: Api) -> None:
    doc = await (await api.get("/openapi.json")).json()
    scrape = doc["paths"]["/metrics"]["get"]
    assert scrape["security"] == [{"metricsToken": []}]
    assert "401" in scrape["responses"] and "403" not in scrape["responses"]
    assert "EVENTBOOK_METRICS_TOKEN" in scrape["description"]


async def test_serve_metrics_port_serves_them_privately_without_a_token(
    config: Config, aiohttp_client: Any
) -> None:
    port = free_port()
    app = create_app(config.replace(metrics_token=None),
                     private_metrics=("127.0.0.1", port))
    api = Api(await aiohttp_client(app))
    assert (await api.get("/healthz")).status == 200
    await assert_problem(await api.get("/metrics"), 404, "not_found")
    text, ready = await scrape_private_port(port)
    assert ready == 200
    # The same registry as the API's: its requests are counted there.
    assert 'route="/healthz",status="200"' in text
    assert "eventbook_outbox_backlog" in text


async def test_a_scrape_serves_what_the_last_refresh_read_and_rendered(
    make_api: Callable[..., Awaitable[Api]], pool
) -> None:
    api = await make_api(metrics_refresh_seconds=3600)
    await metric_becomes(api, "eventbook_outbox_backlog", 0, topic="confirmations")
    await pool.execute(
        "INSERT INTO outbox (topic, kind, payload) VALUES ('confirmations', 'x', '{}')"
    )
    api.app[METRICS].booking_outcome("created")
    assert await metric(api, "eventbook_outbox_backlog", topic="confirmations") == 0
    assert await metric(api, "eventbook_bookings_total", outcome="created") == 0


async def test_metrics_are_prometheus_text(api: Api) -> None:
    answer = await api.get("/metrics", headers=metrics_headers(api))
    assert answer.status == 200
    assert answer.content_type == "text/plain"
    assert "# TYPE eventbook_http_requests_total counter" in await answer.text()


async def test_a_request_increments_the_counter_of_its_route_pattern(api: Api) -> None:
    labels = {"method": "GET", "route": EVENT_ROUTE, "status": "404"}
    assert await metric(api, "eventbook_http_requests_total", **labels) is None
    missing = f"/api/v1/events/{uuid.uuid4()}"
    assert (await api.get(missing)).status == 404
    await metric_becomes(api, "eventbook_http_requests_total", 1, **labels)
    assert (await api.get(f"/api/v1/events/{uuid.uuid4()}")).status == 404
    await metric_becomes(api, "eventbook_http_requests_total", 2, **labels)
    await metric_becomes(api, "eventbook_http_request_duration_seconds_count", 2, **labels)
    assert missing not in await (await api.get("/metrics", headers=metrics_headers(api))).text()


async def test_a_path_no_route_matches_is_counted_as_unmatched(api: Api) -> None:
    await api.get("/no/such/thing")
    labels = {"method": "GET", "route": "unmatched", "status": "404"}
    await metric_becomes(api, "eventbook_http_requests_total", 1, **labels)


async def test_every_app_starts_from_zero(make_api) -> None:
    first = await make_api()
    await first.get("/healthz")
    second = await make_api()
    labels = {"method": "GET", "route": "/healthz", "status": "200"}
    await metric_becomes(first, "eventbook_http_requests_total", 1, **labels)
    await metric_becomes(second, "eventbook_outbox_backlog", 0, topic="confirmations")
    assert await metric(second, "eventbook_http_requests_total", **labels) is None


async def test_booking_outcomes_are_counted_by_name(api: Api) -> None:
    assert await metric(api, "eventbook_bookings_total", outcome="sold_out") == 0
    api.app[METRICS].booking_outcome("sold_out")
    await metric_becomes(api, "eventbook_bookings_total", 1, outcome="sold_out")
    with pytest.raises(ValueError):
        api.app[METRICS].booking_outcome("sold out")


def test_every_booking_outcome_label_is_one_the_counter_knows_and_shows_at_zero() -> None:
    labels = {outcome.metric for outcome in BOOK_OUTCOMES.values()} - {None}
    assert labels == set(BOOKING_OUTCOMES)


async def test_actor_and_mail_counters(api: Api) -> None:
    metrics = api.app[METRICS]
    metrics.actor_restarted("confirmations")
    metrics.mail_sent("booking_confirmed")
    metrics.mail_sent("booking_confirmed")
    metrics.mail_failed("event_updated")
    metrics.fanout_progress("event_updated", 250)
    await metric_becomes(api, "eventbook_actor_restarts_total", 1, actor="confirmations")
    sent = {"kind": "booking_confirmed", "result": "sent"}
    assert await metric(api, "eventbook_mails_total", **sent) == 2
    failed = {"kind": "event_updated", "result": "failed"}
    assert await metric(api, "eventbook_mails_total", **failed) == 1
    assert await metric(api, "eventbook_fanout_recipients_total", kind="event_updated") == 250
    with metrics.fanout_running():
        await metric_becomes(api, "eventbook_fanout_in_progress", 1)
    await metric_becomes(api, "eventbook_fanout_in_progress", 0)


async def test_outbox_backlog_and_the_age_of_its_oldest_row(api: Api, pool) -> None:
    await metric_becomes(api, "eventbook_outbox_backlog", 0, topic="confirmations")
    await pool.execute(
        "INSERT INTO outbox (topic, kind, payload, created_at)"
        " VALUES ('confirmations', 'booking_confirmed', '{}', now() - interval '90 seconds'),"
        "        ('confirmations', 'booking_confirmed', '{}', now())"
    )
    await metric_becomes(api, "eventbook_outbox_backlog", 2, topic="confirmations")
    assert await metric(api, "eventbook_outbox_backlog", topic="notifications") == 0
    age = await metric(api, "eventbook_outbox_oldest_age_seconds", topic="confirmations")
    assert age is not None and 90 <= age < 150
    assert await metric(api, "eventbook_metrics_source_up", source="postgres") == 1


async def test_stream_length_pending_lag_and_dead_letters(api: Api, config) -> None:
    client = api.app[REDIS]
    stream = stream_key(config.redis_prefix, "confirmations")
    dead = dead_letter_key(config.redis_prefix, "confirmations")
    api.app[METRICS].watch_stream(stream, "confirmations", dead)
    labels = {"stream": stream, "group": "confirmations"}
    await metric_becomes(api, "eventbook_stream_length", 0, **labels)

    await client.xgroup_create(stream, "confirmations", id="0", mkstream=True)
    for n in range(5):
        await client.xadd(stream, {"kind": "booking_confirmed", "n": str(n)})
    await client.xreadgroup("confirmations", "worker-1", {stream: ">"}, count=2)
    await client.xadd(dead, {"kind": "booking_confirmed", "error": "boom"})

    async def gauges() -> list[float | None]:
        names = ("stream_length", "stream_pending", "stream_lag", "dead_letters")
        return [await metric(api, f"eventbook_{name}", **labels) for name in names]

    # 5 entries, 2 read and not acked, 3 never delivered, 1 given up on.
    await eventually(lambda: _equal(gauges(), [5, 2, 3, 1]))
    assert await metric(api, "eventbook_metrics_source_up", source="redis") == 1


async def _equal(values: Awaitable[list[float | None]], expected: list[float]) -> bool:
    return await values == expected


async def test_the_access_log_names_an_unmatched_route_as_the_metrics_do(api: Api) -> None:
    with structlog.testing.capture_logs() as logs:
        assert (await api.get("/no/such/route")).status == 404
        assert (await api.request("DELETE", "/api/v1/events")).status == 405
    routes = [line["route"] for line in logs if line["event"] == "request"]
    assert routes == ["unmatched", "unmatched"]


async def test_waiting_list_entries_and_offers_are_counted_from_the_database(
    api: Api, organizer, customer, pool
) -> None:
    """Offers are made inside the transactions that give tickets back (here a cancelled
    booking, an expired offer and a declined one): the figures follow them all."""
    await metric_becomes(api, "eventbook_waitlist_entries", 0, status="waiting")
    event = await api.create_event(organizer, capacity=3)
    booking = await expect(await api.book(customer, event, quantity=3), 201)
    waiting = [await api.register() for _ in range(4)]
    entries = [await expect(await api.join_waitlist(user, event, quantity=1), 201)
               for user in waiting]
    await metric_becomes(api, "eventbook_waitlist_entries", 4, status="waiting")
    assert await metric(api, "eventbook_waitlist_joined_total") == 4
    assert await metric(api, "eventbook_waitlist_offers_total", outcome="made") == 0

    await expect(await api.post(f"/api/v1/bookings/{booking['id']}/cancel", customer), 200)
    await metric_becomes(api, "eventbook_waitlist_offers_total", 3, outcome="made")
    assert await metric(api, "eventbook_waitlist_entries", status="offered") == 3
    assert await metric(api, "eventbook_waitlist_entries", status="waiting") == 1

    first, second, third = [await api.waitlist_entry(user, entry)
                            for user, entry in zip(waiting[:3], entries[:3], strict=True)]
    await expect(await api.confirm(waiting[0], {"id": first["hold_id"]}), 201)
    await pool.execute("UPDATE holds SET expires_at = now() - interval '1 second'"
                       " WHERE id = $1::uuid", second["hold_id"])
    await pool.execute("SELECT expire_holds(100)")
    answer = await api.delete(f"/api/v1/waitlist/{third['id']}", waiting[2])
    assert answer.status == 204, await answer.text()

    await metric_becomes(api, "eventbook_waitlist_offers_total", 4, outcome="made")
    for outcome in ("accepted", "expired", "declined"):
        assert await metric(api, "eventbook_waitlist_offers_total", outcome=outcome) == 1
    shown = {status: await metric(api, "eventbook_waitlist_entries", status=status)
             for status in ("waiting", "offered", "accepted", "expired", "declined", "left")}
    assert shown == {"waiting": 0, "offered": 1, "accepted": 1, "expired": 1, "declined": 1,
                     "left": 0}
    assert await metric(api, "eventbook_waitlist_joined_total") == 4


async def test_waiting_list_counters_keep_their_last_values_while_postgres_is_away(
    config: Config, pool
) -> None:
    """Shown as zero before the first read, or while PostgreSQL is away, a counter would
    seem to fall and jump back: a burst of offers that never happened."""
    metrics = Metrics()
    await metrics.refresh(None, None)
    assert sample(metrics, "eventbook_waitlist_offers_total", outcome="made") is None

    await pool.execute(
        "INSERT INTO waitlist_entries (event_id, ticket_type_id, user_id, quantity)"
        " SELECT e.id, t.id, e.organizer_id, 1 FROM events e"
        " JOIN ticket_types t ON t.event_id = e.id WHERE e.id = $1", await insert_event(pool)
    )
    away = await connections.create_pool(config.database_url, 1, 1)
    await metrics.refresh(away, None)
    assert sample(metrics, "eventbook_waitlist_joined_total") == 1
    await away.close()
    await metrics.refresh(away, None)
    assert sample(metrics, "eventbook_metrics_source_up", source="postgres") == 0
    assert sample(metrics, "eventbook_waitlist_joined_total") == 1
    assert sample(metrics, "eventbook_waitlist_entries", status="waiting") == 1


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return None


async def test_webhook_attempts_lag_and_deliveries_follow_real_deliveries(
    webhooks_api: Api, organizer, customer
) -> None:
    """A healthy receiver and one that always answers 500 (retried 0.2, 0.4, 0.8 s later,
    then given up on), and one endpoint its owner paused: each booking is one success
    with its lag, three failed attempts and a delivery given up on, and one delivery
    that waits for the paused endpoint, pending but not due."""
    from aiohttp import web

    api = webhooks_api
    event = await api.create_event(organizer)

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=500)

    failing = Receiver()
    failing.answer = refuse
    async with receiving() as healthy, receiving(failing):
        for url in (healthy.url, failing.url):
            await expect(await api.post("/api/v1/webhooks", organizer, json={"url": url}), 201)
        await expect(await api.post("/api/v1/webhooks", organizer, json={
            "url": "http://127.0.0.1:9/never", "status": "paused"}), 201)
        await metric_becomes(api, "eventbook_webhook_endpoints_paused", 1, reason="owner")
        assert await metric(api, "eventbook_webhook_endpoints_paused", reason="failing") == 0
        await expect(await api.book(customer, event), 201)

        await metric_becomes(api, "eventbook_webhook_attempts_total", 1, result="given_up")
        assert await metric(api, "eventbook_webhook_attempts_total", result="failed") == 3
        await metric_becomes(api, "eventbook_webhook_attempts_total", 1, result="succeeded")
        lag = await metric(api, "eventbook_webhook_delivery_lag_seconds_sum")
        assert await metric(api, "eventbook_webhook_delivery_lag_seconds_count") == 1
        assert lag is not None and 0 <= lag < 5
        await metric_becomes(api, "eventbook_webhook_deliveries_failed", 1)
        assert await metric(api, "eventbook_webhook_deliveries_pending", state="all") == 1
        assert await metric(api, "eventbook_webhook_deliveries_pending", state="due") == 0
        assert await metric(api, "eventbook_webhook_oldest_due_seconds") == 0
    assert len(healthy.received) == 1 and len(failing.received) == 4


async def test_the_webhook_gauges_read_only_the_deliveries_not_succeeded(pool) -> None:
    """Succeeded deliveries pile up for ever; the gauges' query goes through the partial
    indexes of pending and failed ones, never through them all."""
    endpoint = await insert_webhook_endpoint(pool)
    await insert_webhook_deliveries(pool, endpoint, 20_000, status="succeeded")
    await insert_webhook_deliveries(pool, endpoint, 5, due_seconds_ago=30)
    await insert_webhook_deliveries(pool, endpoint, 2, status="failed")
    await pool.execute("ANALYZE webhook_deliveries")

    plan = "\n".join(row[0] for row in await pool.fetch("EXPLAIN " + WEBHOOK_BACKLOG))
    assert "Seq Scan on webhook_deliveries" not in plan, plan
    assert "webhook_deliveries_due" in plan and "webhook_deliveries_failed" in plan, plan
    row = await pool.fetchrow(WEBHOOK_BACKLOG)
    assert (row["pending"], row["due"], row["failed"]) == (5, 5, 2)
    assert 30 <= row["oldest_due_seconds"] < 90
