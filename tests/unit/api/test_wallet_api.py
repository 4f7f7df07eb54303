"""Prepaid wallets over HTTP: a customer's phone shows their balance after a sandbox top-up and what the site's
credit rules make of it (low credit, friendly hours); billing staff set the rules, in the operation log; bad
rules answer 422 naming the field; nobody sees another account's wallet."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from openami.api.app import create_app
from openami.bootstrap import Container, bootstrap
from openami.common.clock import ManualClock
from openami.config import Settings
from openami.security.audit import AuditEntry
from openami.security.models import Role
from tests.auth_helpers import make_person, token_client
from tests.unit.api.world import World, build_world

# Tuesday 3 March 2026, 10:00 in Nairobi: outside the default friendly hours (16:00-08:00, weekends, holidays).
WORKDAY = datetime(2026, 3, 3, 7, 0, tzinfo=UTC)
RULES = {
    "low_credit": "50.00",
    "disconnect_below": "0",
    "emergency_credit": "10.00",
    "debt_recovery_bp": 2500,
    "friendly_hours": {"daily_from": "18:00", "daily_to": "07:00", "weekdays": [6], "holidays": True},
}


@pytest.fixture
def setup(sqlite_engine: Engine, sqlite_url: str) -> tuple[FastAPI, Container, World, ManualClock, int]:
    """The world, plus a prepaid account of customer A1 with a wallet charging from 1 March."""
    clock = ManualClock(WORKDAY)
    container = bootstrap(Settings(database_url=sqlite_url), clock=clock, engine=sqlite_engine)
    world = build_world(container)
    with container.session_factory() as session, session.begin():
        account = container.registry.create_account(
            session, site_id=world.a.site_id, customer_id=world.a.customer_id, number="PRE-A1", kind="prepaid"
        )
        container.wallets.open_wallet(
            session, account.id, charge_from=date(2026, 3, 1), actor="test", role="test"
        )
    return create_app(container), container, world, clock, account.id


def _customer(app: FastAPI, container: Container, world: World) -> TestClient:
    me = make_person(
        container, "customer-a1", [(Role.CUSTOMER, world.a.site_id)], customer_ids=[world.a.customer_id]
    )
    return token_client(app, container, me, [Role.CUSTOMER], [world.a.site_id])


def _billing(app: FastAPI, container: Container, world: World) -> TestClient:
    staff = make_person(container, "wanjiru", [(Role.BILLING, world.a.site_id)])
    return token_client(app, container, staff, [Role.BILLING], [world.a.site_id])


def test_a_customer_sees_their_topped_up_wallet_and_its_credit_state(
    setup: tuple[FastAPI, Container, World, ManualClock, int],
) -> None:
    app, container, world, clock, account_id = setup
    staff = _billing(app, container, world)
    assert staff.put(f"/api/v1/sites/{world.a.site_id}/credit-rules", json=RULES).status_code == 200
    client = _customer(app, container, world)
    checkout = client.post(f"/api/v1/accounts/{account_id}/payments/checkout", json={"amount": "25.00"})
    assert checkout.status_code == 200, checkout.text
    token = checkout.json()["redirect_url"].rsplit("/", 1)[1]
    paid = client.post(f"/api/v1/payments/sandbox/checkout/{token}/succeeded")
    assert paid.status_code == 200, paid.text

    wallet = client.get(f"/api/v1/accounts/{account_id}/wallet")
    assert wallet.status_code == 200, wallet.text
    w = wallet.json()
    assert (w["currency"], w["balance"], w["debt"]) == ("KES", "25.00", "0.00")
    assert w["credit_state"]["action"] == "warn_low"  # 25.00 is below the 50.00 warning
    assert w["emergency_credit"] == {"amount": "10.00", "in_use": False}
    assert (w["friendly_hours_now"], w["friendly_until"], w["supply_connected"]) == (False, None, True)
    assert w["days_left"] is None  # nothing charged yet: no prediction
    # At 19:00 in Nairobi the friendly hours hold off any cut-off until 07:00, 04:00 UTC.
    clock.set(datetime(2026, 3, 3, 16, 0, tzinfo=UTC))
    evening = client.get(f"/api/v1/accounts/{account_id}/wallet").json()
    assert (evening["friendly_hours_now"], evening["friendly_until"]) == (True, "2026-03-04T04:00:00Z")
    # The site's terms are readable by its customers; another site's are not.
    terms = client.get(f"/api/v1/sites/{world.a.site_id}/credit-rules")
    assert (terms.status_code, terms.json()["low_credit"], terms.json()["reconnect_at"]) == (
        200,
        "50.00",
        "0.00",
    )
    assert client.get(f"/api/v1/sites/{world.b.site_id}/credit-rules").status_code == 404


def test_another_accounts_wallet_is_not_found(
    setup: tuple[FastAPI, Container, World, ManualClock, int],
) -> None:
    app, container, world, _, account_id = setup
    neighbour = make_person(
        container, "customer-a2", [(Role.CUSTOMER, world.a.site_id)], customer_ids=[world.a2.customer_id]
    )
    client = token_client(app, container, neighbour, [Role.CUSTOMER], [world.a.site_id])
    assert client.get(f"/api/v1/accounts/{account_id}/wallet").status_code == 404
    b_staff = make_person(container, "billing-b", [(Role.BILLING, world.b.site_id)])
    b_client = token_client(app, container, b_staff, [Role.BILLING], [world.b.site_id])
    assert b_client.get(f"/api/v1/accounts/{account_id}/wallet").status_code == 404
    assert b_client.get("/api/v1/accounts/999999/wallet").status_code == 404
    # A postpaid account has no wallet: 404 with the reason.
    mine = _customer(app, container, world).get(f"/api/v1/accounts/{world.a.account_id}/wallet")
    assert mine.status_code == 404
    assert "no wallet" in mine.json()["detail"]


def test_billing_staff_set_the_rules_in_the_operation_log_and_bad_rules_answer_422(
    setup: tuple[FastAPI, Container, World, ManualClock, int],
) -> None:
    app, container, world, _, _ = setup
    staff = _billing(app, container, world)
    url = f"/api/v1/sites/{world.a.site_id}/credit-rules"
    defaults = staff.get(url).json()
    assert (defaults["low_credit"], defaults["friendly_hours"]["daily_from"]) == ("0.00", "16:00")
    stored = staff.put(url, json=RULES)
    assert stored.status_code == 200, stored.text
    assert stored.json()["friendly_hours"] == {
        "daily_from": "18:00", "daily_to": "07:00", "weekdays": [6], "holidays": True,
    }  # fmt: skip
    with container.session_factory() as session:
        [entry] = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "prepayment.credit_rules_set")
        )
    assert (entry.actor.split(" ")[0], entry.role, entry.site_id) == ("wanjiru", "billing", world.a.site_id)
    assert json.loads(entry.after or "{}")["low_credit_minor"] == 5000

    def refused(change: dict[str, object]) -> tuple[int, object]:
        response = staff.put(url, json=RULES | change)
        body = response.json()
        return response.status_code, body.get("location", body["detail"])

    assert refused({"low_credit": "-1"}) == (422, "credit_rules.low_credit_minor")  # below the cut-off
    assert refused({"low_credit": "50.001"}) == (422, "low_credit")  # KES has two decimals
    assert refused({"reconnect_at": "-5"}) == (422, "credit_rules.reconnect_at_minor")
    status, where = refused({"friendly_hours": {"daily_from": "18:00", "daily_to": None}})
    assert (status, where) == (422, "friendly_hours.daily")
    assert refused({"friendly_hours": {"weekdays": [9]}}) == (422, "friendly_hours.weekdays")
    status, detail = refused({"debt_recovery_bp": 10_001})
    assert status == 422
    assert detail[0]["loc"] == ["body", "debt_recovery_bp"]  # type: ignore[index]
    assert staff.put(url, json={"low_credit": "1"}).status_code == 422  # the thresholds are required
    assert _customer(app, container, world).put(url, json=RULES).status_code == 403
    assert staff.put(f"/api/v1/sites/{world.b.site_id}/credit-rules", json=RULES).status_code == 404
    assert staff.get(url).json()["low_credit"] == "50.00"  # the refusals changed nothing
