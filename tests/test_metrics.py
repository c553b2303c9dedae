"""GET /metrics: request counts by route pattern, domain counters, outbox and stream gauges."""

from __future__ import annotations

import uuid

import pytest
import structlog

from eventbook.keys import METRICS, REDIS
from tests.client import Api, metric

EVENT_ROUTE = "/api/v1/events/{id}"


async def test_metrics_are_prometheus_text(api: Api) -> None:
    answer = await api.get("/metrics")
    assert answer.status == 200
    assert answer.content_type == "text/plain"
    assert "# TYPE eventbook_http_requests_total counter" in await answer.text()


async def test_a_request_increments_the_counter_of_its_route_pattern(api: Api) -> None:
    labels = {"method": "GET", "route": EVENT_ROUTE, "status": "404"}
    assert await metric(api, "eventbook_http_requests_total", **labels) is None
    missing = f"/api/v1/events/{uuid.uuid4()}"
    assert (await api.get(missing)).status == 404
    assert await metric(api, "eventbook_http_requests_total", **labels) == 1
    assert (await api.get(f"/api/v1/events/{uuid.uuid4()}")).status == 404
    assert await metric(api, "eventbook_http_requests_total", **labels) == 2
    assert await metric(api, "eventbook_http_request_duration_seconds_count", **labels) == 2
    assert missing not in await (await api.get("/metrics")).text()


async def test_a_path_no_route_matches_is_counted_as_unmatched(api: Api) -> None:
    await api.get("/no/such/thing")
    labels = {"method": "GET", "route": "unmatched", "status": "404"}
    assert await metric(api, "eventbook_http_requests_total", **labels) == 1


async def test_every_app_starts_from_zero(make_api) -> None:
    first = await make_api()
    await first.get("/healthz")
    second = await make_api()
    labels = {"method": "GET", "route": "/healthz", "status": "200"}
    assert await metric(first, "eventbook_http_requests_total", **labels) == 1
    assert await metric(second, "eventbook_http_requests_total", **labels) is None


async def test_booking_outcomes_are_counted_by_name(api: Api) -> None:
    assert await metric(api, "eventbook_bookings_total", outcome="sold_out") == 0
    api.app[METRICS].booking_outcome("sold_out")
    assert await metric(api, "eventbook_bookings_total", outcome="sold_out") == 1
    with pytest.raises(ValueError):
        api.app[METRICS].booking_outcome("sold out")


async def test_actor_and_mail_counters(api: Api) -> None:
    metrics = api.app[METRICS]
    metrics.actor_restarted("confirmations")
    metrics.mail_sent("booking_confirmed")
    metrics.mail_sent("booking_confirmed")
    metrics.mail_failed("event_updated")
    metrics.fanout_progress("event_updated", 250)
    assert await metric(api, "eventbook_actor_restarts_total", actor="confirmations") == 1
    sent = {"kind": "booking_confirmed", "result": "sent"}
    assert await metric(api, "eventbook_mails_total", **sent) == 2
    failed = {"kind": "event_updated", "result": "failed"}
    assert await metric(api, "eventbook_mails_total", **failed) == 1
    assert await metric(api, "eventbook_fanout_recipients_total", kind="event_updated") == 250
    with metrics.fanout_running():
        assert await metric(api, "eventbook_fanout_in_progress") == 1
    assert await metric(api, "eventbook_fanout_in_progress") == 0


async def test_outbox_backlog_and_the_age_of_its_oldest_row(api: Api, pool) -> None:
    assert await metric(api, "eventbook_outbox_backlog", topic="confirmations") == 0
    await pool.execute(
        "INSERT INTO outbox (topic, kind, payload, created_at)"
        " VALUES ('confirmations', 'booking_confirmed', '{}', now() - interval '90 seconds'),"
        "        ('confirmations', 'booking_confirmed', '{}', now())"
    )
    assert await metric(api, "eventbook_outbox_backlog", topic="confirmations") == 2
    assert await metric(api, "eventbook_outbox_backlog", topic="notifications") == 0
    age = await metric(api, "eventbook_outbox_oldest_age_seconds", topic="confirmations")
    assert age is not None and 90 <= age < 150
    assert await metric(api, "eventbook_metrics_source_up", source="postgres") == 1


async def test_stream_length_pending_lag_and_dead_letters(api: Api, config) -> None:
    client = api.app[REDIS]
    stream = f"{config.redis_prefix}stream:confirmations"
    dead = f"{config.redis_prefix}dead:confirmations"
    api.app[METRICS].watch_stream(stream, "confirmations", dead)
    labels = {"stream": stream, "group": "confirmations"}
    assert await metric(api, "eventbook_stream_length", **labels) == 0

    await client.xgroup_create(stream, "confirmations", id="0", mkstream=True)
    for n in range(5):
        await client.xadd(stream, {"kind": "booking_confirmed", "n": str(n)})
    await client.xreadgroup("confirmations", "worker-1", {stream: ">"}, count=2)
    await client.xadd(dead, {"kind": "booking_confirmed", "error": "boom"})

    assert await metric(api, "eventbook_stream_length", **labels) == 5
    assert await metric(api, "eventbook_stream_pending", **labels) == 2  # read, not acked
    assert await metric(api, "eventbook_stream_lag", **labels) == 3  # never delivered
    assert await metric(api, "eventbook_dead_letters", **labels) == 1
    assert await metric(api, "eventbook_metrics_source_up", source="redis") == 1


async def test_the_access_log_names_an_unmatched_route_as_the_metrics_do(api: Api) -> None:
    with structlog.testing.capture_logs() as logs:
        assert (await api.get("/no/such/route")).status == 404
        assert (await api.request("DELETE", "/api/v1/events")).status == 405
    routes = [line["route"] for line in logs if line["event"] == "request"]
    assert routes == ["unmatched", "unmatched"]
