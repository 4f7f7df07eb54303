"""The registry HTTP API through TestClient, on a small app around a bootstrapped container."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from openami.api.app import create_app
from openami.bootstrap import bootstrap
from openami.common.clock import ManualClock
from openami.config import Settings
from openami.security.models import Role
from tests.auth_helpers import make_person, sign_in

from .helpers import KEY_HEX

SITE = {
    "code": "KSM",
    "name": "Kisumu",
    "timezone": "Africa/Nairobi",
    "currency": "KES",
    "holiday_country": "KE",
}


@pytest.fixture
def client(sqlite_engine: Engine, sqlite_url: str, clock: ManualClock) -> Iterator[TestClient]:
    """Signed in (a browser session) as the admin of a head-office site, "HQ", which the admin then extends."""
    container = bootstrap(Settings(database_url=sqlite_url), clock=clock, engine=sqlite_engine)
    app = create_app(container)
    with container.session_factory() as session, session.begin():
        hq = container.registry.create_site(session, **(SITE | {"code": "HQ", "name": "Head office"}))
    admin = make_person(container, "admin1", [(Role.ADMIN, hq.id)])
    with sign_in(app, container, admin) as test_client:
        yield test_client


def _post(client: TestClient, path: str, body: dict[str, Any], expect: int = 201) -> dict[str, Any]:
    response = client.post(f"/api/v1/{path}", json=body)
    assert response.status_code == expect, response.text
    result: dict[str, Any] = response.json()
    return result


def _tree(client: TestClient) -> dict[str, dict[str, Any]]:
    site = _post(client, "sites", SITE)
    customer = _post(client, "customers", {"site_id": site["id"], "reference": "C-1", "name": "Achieng"})
    account = _post(
        client,
        "accounts",
        {"site_id": site["id"], "customer_id": customer["id"], "number": "A-1", "kind": "prepaid"},
    )
    check = _post(
        client,
        "meters",
        {
            "site_id": site["id"],
            "serial": "CHK-1",
            "model": "OA-3P",
            "rated_current_a": 200,
            "phases": 3,
            "role": "check",
            "auth_key": KEY_HEX,
        },
    )
    transformer = _post(
        client,
        "transformers",
        {"site_id": site["id"], "code": "TX-1", "rating_kva": 100, "check_meter_id": check["id"]},
    )
    point = _post(
        client,
        "service-points",
        {
            "site_id": site["id"],
            "code": "SP-1",
            "rated_current_a": 40,
            "account_id": account["id"],
            "transformer_id": transformer["id"],
            "address": "Plot 12",
        },
    )
    meter = _post(
        client,
        "meters",
        {
            "site_id": site["id"],
            "serial": "M-1",
            "model": "OA-1P",
            "rated_current_a": 60,
            "auth_key": KEY_HEX,
            "service_point_id": point["id"],
            "installed_at": "2025-11-03T12:30:00+03:00",
        },
    )
    return {
        "site": site,
        "customer": customer,
        "account": account,
        "check": check,
        "transformer": transformer,
        "point": point,
        "meter": meter,
    }


def test_create_and_read_the_whole_tree(client: TestClient, clock: ManualClock) -> None:
    tree = _tree(client)
    site = tree["site"]
    assert site["code"] == "KSM"
    assert site["created_at"].startswith(clock.now().isoformat()[:19])
    meter = tree["meter"]
    assert meter["site_code"] == "KSM"
    assert meter["service_rated_current_a"] == 40
    assert meter["max_power_w"] == 230.0 * 40
    assert meter["account_id"] == tree["account"]["id"]
    assert meter["transformer_id"] == tree["transformer"]["id"]
    assert meter["installed_at"].startswith("2025-11-03T09:30:00")
    assert tree["check"]["transformer_id"] is None  # created before its transformer
    check = client.get("/api/v1/meters/CHK-1").json()
    assert (check["role"], check["transformer_id"]) == ("check", tree["transformer"]["id"])
    for path, obj in [
        (f"sites/{site['id']}", site),
        (f"customers/{tree['customer']['id']}", tree["customer"]),
        (f"accounts/{tree['account']['id']}", tree["account"]),
        (f"transformers/{tree['transformer']['id']}", tree["transformer"]),
        (f"service-points/{tree['point']['id']}", tree["point"]),
        ("meters/M-1", meter),
    ]:
        response = client.get(f"/api/v1/{path}")
        assert response.status_code == 200, path
        assert response.json() == obj


def test_responses_never_contain_the_auth_key(client: TestClient) -> None:
    _tree(client)
    for path in ("meters", "meters/M-1", "meters/CHK-1"):
        response = client.get(f"/api/v1/{path}")
        assert KEY_HEX not in response.text
        assert "auth_key" not in response.text
    created = client.post(
        "/api/v1/meters",
        json={"site_id": 1, "serial": "M-2", "model": "x", "rated_current_a": 60, "auth_key": KEY_HEX},
    )
    assert created.status_code == 201
    assert KEY_HEX not in created.text
    assert "auth_key" not in created.json()


def test_lists_filter_by_site_and_page(client: TestClient) -> None:
    first = _post(client, "sites", SITE)
    second = _post(client, "sites", SITE | {"code": "NBO"})
    for i in range(3):
        _post(client, "customers", {"site_id": first["id"], "reference": f"C-{i}", "name": "n"})
    _post(client, "customers", {"site_id": second["id"], "reference": "C-0", "name": "n"})
    everyone = client.get("/api/v1/customers").json()
    assert [(c["site_id"], c["reference"]) for c in everyone] == [
        (first["id"], "C-0"),
        (first["id"], "C-1"),
        (first["id"], "C-2"),
        (second["id"], "C-0"),
    ]
    only_second = client.get("/api/v1/customers", params={"site_id": second["id"]}).json()
    assert [c["site_id"] for c in only_second] == [second["id"]]
    page = client.get("/api/v1/customers", params={"limit": 2, "offset": 1}).json()
    assert [c["reference"] for c in page] == ["C-1", "C-2"]
    sites = client.get("/api/v1/sites", params={"limit": 1, "offset": 1}).json()
    assert [s["code"] for s in sites] == ["KSM"]
    assert client.get("/api/v1/customers", params={"limit": 0}).status_code == 422
    assert client.get("/api/v1/customers", params={"offset": -1}).status_code == 422


def test_meter_list_filters_by_site(client: TestClient) -> None:
    tree = _tree(client)
    other = _post(client, "sites", SITE | {"code": "NBO"})
    _post(
        client,
        "meters",
        {"site_id": other["id"], "serial": "N-1", "model": "x", "rated_current_a": 60, "auth_key": KEY_HEX},
    )
    serials = [
        m["serial"] for m in client.get("/api/v1/meters", params={"site_id": tree["site"]["id"]}).json()
    ]
    assert serials == ["CHK-1", "M-1"]
    assert [m["serial"] for m in client.get("/api/v1/meters", params={"offset": 2}).json()] == ["N-1"]


def test_not_found_is_404(client: TestClient) -> None:
    response = client.get("/api/v1/meters/NOPE-1")
    assert response.status_code == 404
    assert "NOPE-1" in response.json()["detail"]
    for path in ("sites/9", "customers/9", "accounts/9", "transformers/9", "service-points/9"):
        assert client.get(f"/api/v1/{path}").status_code == 404, path


def test_duplicates_are_409(client: TestClient) -> None:
    _tree(client)
    response = client.post("/api/v1/sites", json=SITE)
    assert response.status_code == 409
    assert "KSM" in response.json()["detail"]
    again = client.post(
        "/api/v1/meters",
        json={"site_id": 1, "serial": "M-1", "model": "x", "rated_current_a": 60, "auth_key": KEY_HEX},
    )
    assert again.status_code == 409


def test_invalid_values_are_422_with_the_field(client: TestClient) -> None:
    response = client.post("/api/v1/sites", json=SITE | {"timezone": "Africa/Nairob"})
    assert response.status_code == 422
    body = response.json()
    assert body["location"] == "timezone"
    assert "Africa/Nairob" in body["detail"]
    assert [e["location"] for e in body["errors"]] == ["timezone"]

    several = client.post("/api/v1/sites", json=SITE | {"currency": "kes", "holiday_country": "XX"})
    assert several.status_code == 422
    assert [e["location"] for e in several.json()["errors"]] == ["currency", "holiday_country"]


def test_bad_auth_key_is_422_without_echoing_it(client: TestClient) -> None:
    _post(client, "sites", SITE)
    short = "c0ffee" * 10
    response = client.post(
        "/api/v1/meters",
        json={"site_id": 1, "serial": "M-9", "model": "x", "rated_current_a": 60, "auth_key": short},
    )
    assert response.status_code == 422
    assert response.json()["location"] == "auth_key"
    assert short not in response.text


def test_references_to_missing_objects_are_422(client: TestClient) -> None:
    response = client.post("/api/v1/customers", json={"site_id": 42, "reference": "C", "name": "n"})
    assert response.status_code == 422
    assert response.json()["location"] == "site_id"


def test_unknown_body_fields_are_refused(client: TestClient) -> None:
    response = client.post("/api/v1/sites", json=SITE | {"time_zone": "UTC"})
    assert response.status_code == 422


def test_failed_request_writes_nothing(client: TestClient) -> None:
    _post(client, "sites", SITE)
    bad = client.post(
        "/api/v1/meters",
        json={
            "site_id": 1,
            "serial": "M-1",
            "model": "x",
            "rated_current_a": 60,
            "auth_key": KEY_HEX,
            "phases": 2,
        },
    )
    assert bad.status_code == 422
    assert client.get("/api/v1/meters").json() == []


def test_openapi_documents_the_routes_without_exposing_the_key(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/api/v1/sites", "/api/v1/meters", "/api/v1/meters/{serial}", "/api/v1/service-points"} <= set(
        schema["paths"]
    )
    assert "auth_key" not in schema["components"]["schemas"]["MeterOut"]["properties"]
    assert schema["components"]["schemas"]["MeterCreate"]["properties"]["auth_key"]["writeOnly"] is True
