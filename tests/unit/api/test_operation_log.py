"""Every change made through the API is in the operation log, in the same transaction, with who, which role, from
where, before and after, and the reason; a refused or failed change leaves no entry. Auditors browse and filter it."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, select

from openami.api.app import create_app
from openami.bootstrap import Container, bootstrap
from openami.common.clock import ManualClock
from openami.config import Settings
from openami.security.audit import AuditEntry, AuditLog
from openami.security.models import Role
from tests.auth_helpers import make_person, sign_in, token_client
from tests.unit.api.world import T0, World, build_world


@pytest.fixture
def container(sqlite_engine: Engine, sqlite_url: str) -> Container:
    clock = ManualClock(T0.replace(day=2))
    return bootstrap(Settings(database_url=sqlite_url), clock=clock, engine=sqlite_engine)


@pytest.fixture
def app(container: Container) -> FastAPI:
    return create_app(container)


@pytest.fixture
def world(container: Container) -> World:
    return build_world(container)


def _entries(container: Container) -> list[AuditEntry]:
    with container.session_factory() as session:
        return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


def test_a_change_is_logged_with_who_role_where_and_after(
    app: FastAPI, container: Container, world: World
) -> None:
    operator = make_person(container, "otieno", [(Role.OPERATOR, world.a.site_id)])
    client = sign_in(app, container, operator)
    before = len(_entries(container))
    created = client.post(
        "/api/v1/customers", json={"site_id": world.a.site_id, "reference": "C-9", "name": "Akinyi"}
    )
    assert created.status_code == 201, created.text
    entry = _entries(container)[-1]
    assert len(_entries(container)) == before + 1
    assert (entry.actor, entry.role, entry.address) == ("otieno", "operator", "testclient")
    assert (entry.action, entry.object_type, entry.object_id) == (
        "registry.customer_created",
        "customer",
        str(created.json()["id"]),
    )
    assert entry.site_id == world.a.site_id
    assert json.loads(entry.after or "{}")["name"] == "Akinyi"
    with container.session_factory() as session:
        assert AuditLog(container.clock).verify(session).ok  # the chain holds


def test_an_edit_logs_before_after_and_reason_and_the_person_is_the_editor(
    app: FastAPI, container: Container, world: World
) -> None:
    operator = make_person(container, "otieno", [(Role.OPERATOR, world.a.site_id)])
    client = token_client(app, container, operator, [Role.OPERATOR], [world.a.site_id])
    url = f"/api/v1/meters/{world.a.serial}/readings/intervals/2026-03-01T06:00:00Z"
    response = client.put(url, json={"energy_wh": 5, "reason": "meter swapped: value from the old meter"})
    assert response.status_code == 200, response.text
    entry = _entries(container)[-1]
    assert entry.action == "readings.interval_edited"
    assert entry.actor.startswith("otieno (API token #")
    assert (
        json.loads(entry.before or "{}")["energy_wh"] == 77 + 36
    )  # 06:00 UTC, the 37th from 21:00 UTC (local midnight)
    assert json.loads(entry.after or "{}") == {"energy_wh": 5, "quality": "edited", "version": 2}
    assert entry.reason == "meter swapped: value from the old meter"


def test_a_refused_or_failed_change_leaves_no_entry(app: FastAPI, container: Container, world: World) -> None:
    billing = make_person(container, "wanjiru", [(Role.BILLING, world.a.site_id)])
    operator = make_person(container, "otieno", [(Role.OPERATOR, world.a.site_id)])
    before = len(_entries(container))
    refused = token_client(app, container, billing, [Role.BILLING], [world.a.site_id]).post(
        "/api/v1/customers", json={"site_id": world.a.site_id, "reference": "C-9", "name": "x"}
    )
    assert refused.status_code == 403
    duplicate = token_client(app, container, operator, [Role.OPERATOR], [world.a.site_id]).post(
        "/api/v1/customers", json={"site_id": world.a.site_id, "reference": "CUST-A1", "name": "x"}
    )
    assert duplicate.status_code == 409
    assert len(_entries(container)) == before


def test_auditors_browse_and_filter_their_sites_entries_only(
    app: FastAPI, container: Container, world: World
) -> None:
    admin_a = make_person(container, "admin-a", [(Role.ADMIN, world.a.site_id)])
    admin_b = make_person(container, "admin-b", [(Role.ADMIN, world.b.site_id)])
    for admin, site_id in ((admin_a, world.a.site_id), (admin_b, world.b.site_id)):
        client = token_client(app, container, admin, [Role.ADMIN], [site_id])
        for n in range(3):
            body = {"site_id": site_id, "reference": f"AUD-{n}", "name": f"n{n}"}
            assert client.post("/api/v1/customers", json=body).status_code == 201
    auditor = make_person(container, "auditor-a", [(Role.AUDITOR, world.a.site_id)])
    client = token_client(app, container, auditor, [Role.AUDITOR], [world.a.site_id])
    everything = client.get("/api/v1/audit").json()
    # Site A's entries: per customer of the world (tests.unit.api.world), a sandbox checkout, then a reconnect,
    # a bulk read-now (the operation and its command), a protection, an emergency and a webhook; then admin-a's
    # three customers.
    assert len(everything) == 2 + 2 * 6 + 3
    assert {e["site_id"] for e in everything} == {world.a.site_id}
    assert [e["actor"].split(" ")[0] for e in everything] == ["world"] * 14 + ["admin-a"] * 3
    by_action = client.get("/api/v1/audit", params={"action": "registry."}).json()
    assert len(by_action) == 3
    assert (
        client.get("/api/v1/audit", params={"action": "registry"}).json() == []
    )  # exact unless ending in "."
    page = client.get("/api/v1/audit", params={"limit": 2}).json()
    rest = client.get("/api/v1/audit", params={"after_id": page[-1]["id"]}).json()
    assert [e["id"] for e in page + rest] == [e["id"] for e in everything]
    assert client.get("/api/v1/audit", params={"site_id": world.b.site_id}).json() == []
    naive = client.get("/api/v1/audit", params={"since": "2026-03-01T00:00:00"})
    assert naive.status_code == 422
    operator = make_person(container, "otieno", [(Role.OPERATOR, world.a.site_id)])
    as_operator = token_client(app, container, operator, [Role.OPERATOR], [world.a.site_id])
    assert as_operator.get("/api/v1/audit").status_code == 403
