"""Bills over HTTP: a customer sees their own bill and what the current cycle costs so far; billing staff run a
site's billing (once, whatever the retries), and the run is in the operation log."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, select

from openami.api.app import create_app
from openami.bootstrap import Container, bootstrap
from openami.common.clock import ManualClock
from openami.config import Settings
from openami.security.audit import AuditEntry
from openami.security.models import Role
from tests.auth_helpers import make_person, token_client
from tests.unit.api.world import T0, World, build_world


@pytest.fixture
def setup(sqlite_engine: Engine, sqlite_url: str) -> tuple[FastAPI, Container, World]:
    container = bootstrap(
        Settings(database_url=sqlite_url), clock=ManualClock(T0.replace(day=2)), engine=sqlite_engine
    )
    return create_app(container), container, build_world(container)


def test_a_customer_sees_their_bill_and_the_cost_so_far(setup: tuple[FastAPI, Container, World]) -> None:
    app, container, world = setup
    me = make_person(
        container, "customer-a1", [(Role.CUSTOMER, world.a.site_id)], customer_ids=[world.a.customer_id]
    )
    client = token_client(app, container, me, [Role.CUSTOMER], [world.a.site_id])
    [bill] = client.get(f"/api/v1/accounts/{world.a.account_id}/bills").json()
    assert bill["id"] == world.a.bill_id
    # 96 quarter hours of 77..172 Wh = 11.952 kWh at 10 KES.
    assert (bill["currency"], bill["import_kwh"], bill["total"]) == ("KES", "11.952", "119.52")
    assert client.get(f"/api/v1/bills/{world.a.bill_id}").json()["total"] == "119.52"
    cost = client.get(f"/api/v1/accounts/{world.a.account_id}/cost-so-far")
    assert cost.status_code == 200, cost.text
    assert cost.json()["cycle_start"] == "2026-03-01"
    assert client.get(f"/api/v1/bills/{world.a2.bill_id}").status_code == 404  # the neighbour's
    assert (
        client.post(f"/api/v1/sites/{world.a.site_id}/billing-runs", json={"month": "2026-03"}).status_code
        == 403
    )


def test_billing_staff_run_a_site_once_and_it_is_logged(setup: tuple[FastAPI, Container, World]) -> None:
    app, container, world = setup
    staff = make_person(container, "billing-a", [(Role.BILLING, world.a.site_id)])
    client = token_client(app, container, staff, [Role.BILLING], [world.a.site_id])
    url = f"/api/v1/sites/{world.a.site_id}/billing-runs"
    first = client.post(url, json={"month": "2026-02"})
    assert first.status_code == 200, first.text
    assert first.json()["billed"] == 0  # nobody had readings in February
    assert {r["account"] for r in first.json()["not_billed"]} == {"ACC-A1", "ACC-A2"}
    assert client.post(url, json={"month": "2026-13"}).status_code == 422
    assert (
        client.post(f"/api/v1/sites/{world.b.site_id}/billing-runs", json={"month": "2026-02"}).status_code
        == 404
    )
    with container.session_factory() as session:
        runs = session.scalars(select(AuditEntry).where(AuditEntry.action == "billing.run")).all()
    assert [(r.actor.split(" ")[0], r.site_id) for r in runs] == [("billing-a", world.a.site_id)]
