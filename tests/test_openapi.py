"""The OpenAPI document is generated from the routes, validates, and /docs works offline."""

from __future__ import annotations

import re
from typing import Any

from openapi_spec_validator import validate

from eventbook.openapi import documented_routes
from tests.client import Api, expect


async def document(api: Api) -> dict[str, Any]:
    answer = await api.get("/openapi.json")
    assert answer.status == 200
    assert answer.content_type == "application/json"
    body: dict[str, Any] = await answer.json()
    return body


async def test_the_document_validates_as_openapi_3(api: Api) -> None:
    doc = await document(api)
    assert doc["openapi"].startswith("3.")
    validate(doc)


async def test_every_route_the_app_serves_is_declared_and_documented(api: Api) -> None:
    doc = await document(api)
    routes = documented_routes(api.app)
    assert len(routes) >= 20
    for route in routes:
        assert route.resource is not None
        where = f"{route.method} {route.resource.canonical}"
        assert hasattr(route.handler, "endpoint"), f"{where} has no @endpoint declaration"
        assert route.method.lower() in doc["paths"].get(route.resource.canonical, {}), where


async def test_a_route_needing_a_role_names_it_and_needs_the_bearer_token(api: Api) -> None:
    doc = await document(api)
    create = doc["paths"]["/api/v1/events"]["post"]
    assert create["x-roles"] == ["organizer"]
    assert create["security"] == [{"bearerAuth": []}]
    assert "organizer role" in create["description"]
    assert {"401", "403"} <= create["responses"].keys()
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert scheme == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}


async def test_a_public_route_needs_no_token(api: Api) -> None:
    listing = (await document(api))["paths"]["/api/v1/events"]["get"]
    assert "security" not in listing
    assert listing["x-roles"] == []
    assert "401" not in listing["responses"]


async def test_every_error_answer_is_a_problem(api: Api) -> None:
    doc = await document(api)
    problem = {"$ref": "#/components/schemas/Problem"}
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            errors = {s: r for s, r in operation["responses"].items() if int(s) >= 400}
            assert {"500", "503"} <= errors.keys(), f"{method} {path}"
            for status, response in errors.items():
                assert response["content"] == {"application/problem+json": {"schema": problem}}, (
                    f"{method} {path} {status}"
                )
    assert {"type", "title", "status", "detail", "code", "request_id", "errors"} <= (
        doc["components"]["schemas"]["Problem"]["properties"].keys()
    )


async def test_a_route_with_a_body_documents_the_body_problems(api: Api) -> None:
    book = (await document(api))["paths"]["/api/v1/events/{id}/bookings"]["post"]
    assert {"400", "404", "409", "413", "415", "422"} <= book["responses"].keys()
    assert "sold_out" in book["responses"]["409"]["description"]
    assert book["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/NewBooking"
    }


async def test_path_query_and_header_parameters_are_documented(api: Api) -> None:
    doc = await document(api)
    book = doc["paths"]["/api/v1/events/{id}/bookings"]["post"]
    by_name = {(p["in"], p["name"]): p for p in book["parameters"]}
    assert by_name[("path", "id")]["schema"] == {"type": "string", "format": "uuid"}
    assert by_name[("header", "Idempotency-Key")]["required"] is False
    assert {"200", "201"} <= book["responses"].keys()  # 200: a replay
    listing = doc["paths"]["/api/v1/events"]["get"]
    assert {"limit", "cursor", "q", "available"} <= {p["name"] for p in listing["parameters"]}
    page = doc["components"]["schemas"]["EventPage"]
    assert page["properties"]["items"]["items"] == {"$ref": "#/components/schemas/Event"}


async def test_docs_is_a_page_whose_assets_all_come_from_this_server(api: Api) -> None:
    answer = await api.get("/docs")
    assert answer.status == 200
    assert answer.content_type == "text/html"
    html = await answer.text()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "/docs/swagger-ui-bundle.js" in assets
    for asset in assets:
        assert asset.startswith("/") and not asset.startswith("//"), asset
        fetched = await api.get(asset)
        assert fetched.status == 200, asset
        assert len(await fetched.read()) > 0
    script = await (await api.get("/docs/docs.js")).text()
    assert '"/openapi.json"' in script
    assert "http" not in script.replace("validatorUrl: null", "")


async def test_the_time_rules_are_among_the_documented_conflicts(api: Api) -> None:
    paths = (await document(api))["paths"]
    conflicts = {
        ("patch", "/api/v1/events/{id}"): "event_ended",
        ("post", "/api/v1/events/{id}/cancel"): "event_ended",
        ("post", "/api/v1/bookings/{id}/cancel"): "event_started",
    }
    for (method, path), code in conflicts.items():
        assert f"`{code}`" in paths[path][method]["responses"]["409"]["description"], path


async def test_the_per_customer_cap_is_documented(api: Api) -> None:
    doc = await document(api)
    book = doc["paths"]["/api/v1/events/{id}/bookings"]["post"]
    assert "`customer_limit_reached`" in book["responses"]["409"]["description"]
    event = doc["components"]["schemas"]["Event"]
    assert "max_tickets_per_customer" in event["required"]
    assert event["properties"]["max_tickets_per_customer"]["nullable"] is True


async def test_a_body_is_required_exactly_when_an_empty_one_is_refused(
    api: Api, organizer, customer
) -> None:
    paths = (await (await api.get("/openapi.json")).json())["paths"]
    patch = paths["/api/v1/events/{id}"]["patch"]["requestBody"]
    book = paths["/api/v1/events/{id}/bookings"]["post"]["requestBody"]
    assert (patch["required"], book["required"]) == (True, False)
    event = await api.create_event(organizer)
    empty_patch = await api.request("PATCH", f"/api/v1/events/{event['id']}", organizer)
    assert empty_patch.status == 422
    empty_booking = await api.request("POST", f"/api/v1/events/{event['id']}/bookings", customer)
    assert empty_booking.status == 201


async def test_the_document_describes_the_405_answer(api: Api) -> None:
    document = await (await api.get("/openapi.json")).json()
    declared = document["components"]["responses"]["MethodNotAllowed"]
    assert "method_not_allowed" in declared["description"]
    assert "Allow" in declared["headers"]
    assert "405" in document["info"]["description"]
    answer = await api.request("DELETE", "/api/v1/events")
    assert answer.status == 405
    assert set(declared["headers"]) <= {*answer.headers, "X-Request-ID"}
    assert (await answer.json())["code"] == "method_not_allowed"


async def test_an_answer_without_a_body_is_documented_without_one(
    api: Api, organizer, customer
) -> None:
    paths = (await document(api))["paths"]
    empty = [
        (method, path)
        for path, operations in paths.items()
        for method, operation in operations.items()
        if "204" in operation["responses"]
    ]
    assert ("delete", "/api/v1/holds/{id}") in empty
    for method, path in empty:
        assert "content" not in paths[path][method]["responses"]["204"], f"{method} {path}"
    event = await api.create_event(organizer)
    held = await expect(await api.hold(customer, event, quantity=1), 201)
    released = await api.delete(f"/api/v1/holds/{held['id']}", customer)
    assert released.status == 204
    assert "Content-Type" not in released.headers and await released.read() == b""


async def test_confirming_a_hold_again_is_a_documented_200(
    api: Api, organizer, customer
) -> None:
    confirm = (await document(api))["paths"]["/api/v1/holds/{id}/confirm"]["post"]
    assert {"200", "201"} <= confirm["responses"].keys()
    assert confirm["responses"]["200"]["content"] == confirm["responses"]["201"]["content"]
    event = await api.create_event(organizer)
    held = await expect(await api.hold(customer, event, quantity=1), 201)
    first = await expect(await api.post(f"/api/v1/holds/{held['id']}/confirm", customer), 201)
    again = await expect(await api.post(f"/api/v1/holds/{held['id']}/confirm", customer), 200)
    assert again["id"] == first["id"]


async def test_the_ticket_type_and_hold_routes_document_their_problem_codes(api: Api) -> None:
    paths = (await document(api))["paths"]
    types = "/api/v1/events/{id}/ticket-types"
    taking = {
        "409": ["sold_out", "event_not_bookable", "customer_limit_reached",
                "ticket_type_not_on_sale"],
        "422": ["ticket_type_required", "unknown_ticket_type", "idempotency_key_reused"],
    }
    documented = {
        ("get", types): {"404": ["event_not_found"]},
        ("post", types): {
            "403": ["not_event_owner"], "404": ["event_not_found"],
            "409": ["currency_mismatch", "ticket_type_name_taken", "event_cancelled"],
            "422": ["validation_failed"],
        },
        ("get", f"{types}/{{type_id}}"): {"404": ["ticket_type_not_found"]},
        ("patch", f"{types}/{{type_id}}"): {
            "403": ["not_event_owner"], "404": ["ticket_type_not_found"],
            "409": ["currency_mismatch", "quota_below_taken", "ticket_type_name_taken"],
        },
        ("delete", f"{types}/{{type_id}}"): {
            "404": ["ticket_type_not_found"],
            "409": ["ticket_type_has_sales", "last_ticket_type"],
        },
        ("post", "/api/v1/events/{id}/bookings"): taking,
        ("post", "/api/v1/events/{id}/holds"): taking,
        ("get", "/api/v1/holds/{id}"): {"404": ["hold_not_found"]},
        ("post", "/api/v1/holds/{id}/confirm"): {
            "404": ["hold_not_found"],
            "409": ["hold_expired", "hold_released", "hold_already_confirmed",
                    "event_not_bookable"],
        },
        ("delete", "/api/v1/holds/{id}"): {"404": ["hold_not_found"], "409": ["hold_confirmed"]},
    }
    for (method, path), by_status in documented.items():
        responses = paths[path][method]["responses"]
        for status, codes in by_status.items():
            for code in codes:
                assert f"`{code}`" in responses[status]["description"], (method, path, code)
