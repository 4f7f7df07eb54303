"""The assembled application: every context's routes are there, documented, and errors map to statuses."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from openami.api.app import create_app
from openami.bootstrap import bootstrap
from openami.config import Settings
from openami.security.models import Role
from tests.auth_helpers import make_person, token_client


def _client(engine: Engine) -> TestClient:
    """An admin of site "S1" (code S1), with an API token."""
    container = bootstrap(Settings(database_url="sqlite://"), engine=engine)
    app = create_app(container)
    with container.session_factory() as session, session.begin():
        site = container.registry.create_site(
            session, code="S1", name="one", timezone="UTC", currency="EUR", holiday_country="DE"
        )
    admin = make_person(container, "admin1", [(Role.ADMIN, site.id)])
    return token_client(app, container, admin, [Role.ADMIN], [site.id])


def test_health_and_openapi_list_registry_and_readings_routes(sqlite_engine: Engine) -> None:
    client = _client(sqlite_engine)
    assert client.get("/healthz").json()["status"] == "ok"
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/v1/meters/{serial}" in paths
    assert "/api/v1/meters/{serial}/readings/intervals" in paths
    assert "/api/v1/sites" in paths


def test_unknown_meter_is_a_clear_404(sqlite_engine: Engine) -> None:
    response = _client(sqlite_engine).get("/api/v1/meters/NOPE-1/readings/instants")
    assert response.status_code == 404
    assert "NOPE-1" in response.text


def test_rejections_are_counted_by_reason_and_naive_since_is_refused(sqlite_engine: Engine) -> None:
    from datetime import UTC, datetime

    from sqlalchemy.orm import Session

    from openami.headend.models import FrameRejection

    with Session(sqlite_engine) as session, session.begin():
        for reason, at in [
            ("replayed", datetime(2026, 3, 1, tzinfo=UTC)),
            ("replayed", datetime(2026, 3, 2, tzinfo=UTC)),
            ("bad_signature", datetime(2026, 3, 2, tzinfo=UTC)),
        ]:
            topic = "openami/v1/S1/up/M1/data"
            session.add(FrameRejection(received_at=at, serial="M1", topic=topic, reason=reason, detail="d"))
        # Another site's rejection is none of this caller's business.
        session.add(
            FrameRejection(
                received_at=datetime(2026, 3, 2, tzinfo=UTC),
                serial="X1",
                topic="openami/v1/S2/up/X1/data",
                reason="replayed",
                detail="d",
            )
        )
    client = _client(sqlite_engine)
    body = client.get("/api/v1/headend/rejections").json()
    assert body["by_reason"] == {"bad_signature": 1, "replayed": 2}
    assert body["total"] == 3
    since = client.get("/api/v1/headend/rejections", params={"since": "2026-03-01T12:00:00Z"}).json()
    assert since["by_reason"] == {"bad_signature": 1, "replayed": 1}
    assert (
        client.get("/api/v1/headend/rejections", params={"since": "2026-03-01T12:00:00"}).status_code == 422
    )


def test_every_response_carries_the_security_headers(sqlite_engine: Engine) -> None:
    from openami.api.app import SECURITY_HEADERS

    client = _client(sqlite_engine)
    for response in (client.get("/healthz"), client.get("/api/v1/meters/NOPE-1"), client.get("/docs")):
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (response.url, name)


def test_numbers_beyond_any_row_id_are_refused_not_a_server_error(sqlite_engine: Engine) -> None:
    client = _client(sqlite_engine)
    for url in (
        "/api/v1/transformers/3305564815224111999483904",
        "/api/v1/accounts?site_id=1&offset=4645827554170968935527088128",
        "/api/v1/meters?site_id=2570906274332915957497856",
    ):
        assert client.get(url).status_code == 422, url
    body = {"site_id": 10**30, "reference": "C-1", "name": "x"}
    assert client.post("/api/v1/customers", json=body).status_code == 422
