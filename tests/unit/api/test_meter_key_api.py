"""Provisioning a meter's new key through the API: the operator's permission, the caller's sites only, the key
stored sealed and shown nowhere, the change in the operation log."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, select

from openami.api.app import create_app
from openami.bootstrap import Container, bootstrap
from openami.common.clock import ManualClock
from openami.config import Settings
from openami.registry.models import Meter
from openami.security.audit import AuditEntry
from openami.security.models import Role
from tests.auth_helpers import make_person, token_client
from tests.unit.api.world import T0, World, build_world

NEW_KEY = "ab" * 32


@pytest.fixture
def setup(sqlite_engine: Engine, sqlite_url: str) -> tuple[FastAPI, Container, World]:
    container = bootstrap(
        Settings(database_url=sqlite_url), clock=ManualClock(T0.replace(day=2)), engine=sqlite_engine
    )
    return create_app(container), container, build_world(container)


def test_an_operator_provisions_a_key_that_is_stored_sealed_and_shown_nowhere(
    setup: tuple[FastAPI, Container, World],
) -> None:
    app, container, world = setup
    operator = make_person(container, "otieno", [(Role.OPERATOR, world.a.site_id)])
    client = token_client(app, container, operator, [Role.OPERATOR], [world.a.site_id])
    url = f"/api/v1/meters/{world.a.serial}/key"
    response = client.post(
        url, json={"auth_key": NEW_KEY, "grace_hours": 24, "reason": "meter re-keyed in field"}
    )
    assert response.status_code == 200, response.text
    assert NEW_KEY not in response.text
    assert response.json()["previous_key_until"] == "2026-03-03T00:00:00Z"
    with container.session_factory() as session:
        assert container.registry.meter_by_serial(session, world.a.serial).auth_key == bytes.fromhex(NEW_KEY)
        raw = session.scalar(select(Meter.auth_key).where(Meter.serial == world.a.serial))
        assert bytes.fromhex(NEW_KEY) not in (raw or b"")
        entry = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
    assert entry is not None
    assert (entry.action, entry.object_id, entry.reason) == (
        "meter_key.rotate",
        world.a.serial,
        "meter re-keyed in field",
    )
    assert NEW_KEY not in (entry.after or "")

    bad = client.post(url, json={"auth_key": "not hex", "reason": "x"})
    assert bad.status_code == 422
    other_site = client.post(
        f"/api/v1/meters/{world.b.serial}/key", json={"auth_key": NEW_KEY, "reason": "x"}
    )
    assert other_site.status_code == 404


def test_billing_may_not_change_a_meter_key(setup: tuple[FastAPI, Container, World]) -> None:
    app, container, world = setup
    billing = make_person(container, "wanjiru", [(Role.BILLING, world.a.site_id)])
    client = token_client(app, container, billing, [Role.BILLING], [world.a.site_id])
    response = client.post(f"/api/v1/meters/{world.a.serial}/key", json={"auth_key": NEW_KEY, "reason": "x"})
    assert response.status_code == 403
