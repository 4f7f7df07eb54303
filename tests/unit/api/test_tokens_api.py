"""Offline tokens over HTTP: an operator provisions a meter once (its key shown that once and never again),
billing staff issue tokens that the meter's keypad accepts, amounts in the site's currency convert exactly or
answer 422 naming the field, each tenant sees only its own meters' tokens, and auditors never see the digits."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from openami.api.app import create_app
from openami.bootstrap import Container, bootstrap
from openami.common.clock import ManualClock
from openami.config import Settings
from openami.device.tokens import CreditKind, RejectReason, TokenConfig, TokenRegister
from openami.prepayment.tokens_api import readable
from openami.security.audit import AuditEntry
from openami.security.models import Role
from tests.auth_helpers import make_person, token_client
from tests.unit.api.world import World, build_world

NOW = datetime(2026, 3, 3, 7, 0, tzinfo=UTC)
SPARE = "MTR-A1-0009"  # a meter of site A not yet provisioned for tokens


@dataclass
class Tokens:
    """What the setup issued: the digits of one add token per world meter, by serial."""

    digits: dict[str, str]


def _offline_tokens(container: Container, world: World) -> Tokens:
    """Site A's tokens carry energy (0.1 kWh units), site B's money (whole naira); every world meter is
    provisioned and has one add token, paid by `PAY-<tag>`."""
    tokens, who = container.tokens, {"actor": "world", "role": "test"}
    digits = {}
    with container.session_factory() as session, session.begin():
        tokens.configure_site(session, site_id=world.a.site_id, credit_kind="energy", unit_size=100, **who)
        tokens.configure_site(session, site_id=world.b.site_id, credit_kind="money", unit_size=100, **who)
        for tenant in (world.a, world.a2, world.b):
            meter_id = container.registry.meter_by_serial(session, tenant.serial).id
            tokens.provision_meter(session, meter_id=meter_id, **who)
            energy = tenant is not world.b
            issued = tokens.issue_credit(
                session,
                meter_id=meter_id,
                energy_wh=5_000 if energy else None,
                amount_minor=None if energy else 10_000,
                payment_reference=f"PAY-{tenant.tag}",
                **who,
            )
            digits[tenant.serial] = issued.token
        container.registry.create_meter(
            session, site_id=world.a.site_id, serial=SPARE, model="OA-1P", rated_current_a=60,
            auth_key=bytes(range(32)),
        )  # fmt: skip
    return Tokens(digits)


@pytest.fixture
def setup(sqlite_engine: Engine, sqlite_url: str) -> tuple[FastAPI, Container, World, Tokens]:
    container = bootstrap(Settings(database_url=sqlite_url), clock=ManualClock(NOW), engine=sqlite_engine)
    world = build_world(container)
    return create_app(container), container, world, _offline_tokens(container, world)


def _staff(app: FastAPI, container: Container, name: str, role: Role, site_id: int) -> TestClient:
    person = make_person(container, name, [(role, site_id)])
    return token_client(app, container, person, [role], [site_id])


def _customer(app: FastAPI, container: Container, world: World, customer_id: int, name: str) -> TestClient:
    person = make_person(container, name, [(Role.CUSTOMER, world.a.site_id)], customer_ids=[customer_id])
    return token_client(app, container, person, [Role.CUSTOMER], [world.a.site_id])


def _entries(container: Container, action: str) -> list[AuditEntry]:
    with container.session_factory() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def _all_log_text(container: Container) -> str:
    with container.session_factory() as session:
        return " ".join(f"{e.before} {e.after} {e.reason}" for e in session.scalars(select(AuditEntry)))


def test_a_meter_is_provisioned_once_and_its_keypad_takes_the_tokens_issued(
    setup: tuple[FastAPI, Container, World, Tokens],
) -> None:
    app, container, world, _ = setup
    operator = _staff(app, container, "otieno", Role.OPERATOR, world.a.site_id)
    billing = _staff(app, container, "wanjiru", Role.BILLING, world.a.site_id)
    # Billing staff issue tokens but may not hold a meter's key: whoever has it can mint credit.
    assert billing.post(f"/api/v1/meters/{SPARE}/offline-tokens/provision").status_code == 403

    made = operator.post(f"/api/v1/meters/{SPARE}/offline-tokens/provision")
    assert made.status_code == 201, made.text
    assert made.headers["cache-control"] == "no-store"
    config = made.json()
    assert (config["serial"], config["credit_kind"], config["unit_size"], config["starting_count"]) == (
        SPARE,
        "energy",
        100,
        1,
    )
    key = config["secret_key"]
    assert len(bytes.fromhex(key)) == 16
    again = operator.post(f"/api/v1/meters/{SPARE}/offline-tokens/provision")
    assert again.status_code == 409
    assert "already provisioned" in again.json()["detail"]
    assert key not in again.text
    [entry] = [e for e in _entries(container, "offline_tokens.provision_meter") if e.actor != "world"]
    assert entry.actor.startswith("otieno (API token #")
    assert entry.role == "operator"

    keypad = TokenRegister(
        TokenConfig(bytes.fromhex(key), config["starting_code"], CreditKind.ENERGY, config["unit_size"])
    )
    url = f"/api/v1/meters/{SPARE}/offline-tokens"
    added = billing.post(url, json={"kind": "add", "energy_wh": 2_500, "payment_reference": "MPESA-QX12"})
    assert added.status_code == 201, added.text
    token = added.json()
    assert (token["kind"], token["count"], token["energy_wh"], token["amount"]) == ("add", 2, 2_500, None)
    assert (token["payment_reference"], token["issued_by"].split(" ")[0]) == ("MPESA-QX12", "wanjiru")
    digits = token["token"].replace(" ", "")
    assert re.fullmatch(r"\d{3} \d{3} \d{3}", token["token"]), token["token"]
    assert keypad.enter(digits, NOW).accepted
    assert keypad.credit == 2_500
    assert keypad.enter(digits, NOW).reason is RejectReason.ALREADY_USED

    set_to = billing.post(url, json={"kind": "set", "energy_wh": 0})
    assert set_to.status_code == 201, set_to.text
    assert keypad.enter(set_to.json()["token"].replace(" ", ""), NOW).accepted
    assert keypad.credit == 0
    off = billing.post(url, json={"kind": "disable"})
    assert (off.status_code, off.json()["count"], off.json()["energy_wh"]) == (201, 5, None)
    assert keypad.enter(off.json()["token"].replace(" ", ""), NOW).accepted
    assert not keypad.prepayment_enabled

    listed = operator.get(url).json()
    assert [(t["count"], t["kind"], t["token"]) for t in listed] == [
        (2, "add", token["token"]),
        (3, "set", set_to.json()["token"]),
        (5, "disable", off.json()["token"]),
    ]
    # The key was answered once: no list, no other answer, no operation-log entry carries it.
    assert key not in json.dumps(listed)
    assert key not in _all_log_text(container)
    issued = _entries(container, "offline_tokens.issue_add")
    assert [json.loads(e.after or "{}")["payment_reference"] for e in issued][-1] == "MPESA-QX12"
    assert digits not in _all_log_text(container)  # the digits are credit: not in the log either


def test_money_tokens_take_amounts_in_the_site_currency_converted_exactly(
    setup: tuple[FastAPI, Container, World, Tokens],
) -> None:
    app, container, world, _ = setup
    staff = _staff(app, container, "adebayo", Role.BILLING, world.b.site_id)
    url = f"/api/v1/meters/{world.b.serial}/offline-tokens"
    paid = staff.post(url, json={"kind": "add", "amount": "250.00"})
    assert paid.status_code == 201, paid.text
    assert (paid.json()["amount"], paid.json()["currency"], paid.json()["energy_wh"]) == (
        "250.00",
        "NGN",
        None,
    )
    with container.session_factory() as session:
        meter = container.registry.meter_by_serial(session, world.b.serial)
        stored = container.tokens.tokens_for_meter(session, meter.id)[-1]
    assert (stored.credit_amount, stored.value_units) == (25_000, 250)

    def refused(body: dict[str, object]) -> tuple[int, object]:
        response = staff.post(url, json=body)
        return response.status_code, response.json().get("location")

    assert refused({"kind": "add", "amount": "12.345"}) == (422, "amount")  # not whole kobo
    assert refused({"kind": "add", "amount": "12.50"}) == (422, "amount")  # not whole token units of 1.00
    assert refused({"kind": "add", "amount": "-5"}) == (422, "amount")
    assert refused({"kind": "add", "amount": "996"}) == (422, "amount")  # more than one token holds
    assert refused({"kind": "add"}) == (422, "amount")
    assert refused({"kind": "add", "energy_wh": 1000}) == (422, "energy_wh")  # this site's tokens carry money
    assert refused({"kind": "disable", "amount": "5"}) == (422, "amount")
    assert refused({"kind": "set", "amount": "5", "payment_reference": "X"}) == (422, "payment_reference")
    wrong_kind = staff.post(url, json={"kind": "add", "amount": "5", "energy_wh": 5})
    assert "give amount, not energy_wh" in wrong_kind.json()["detail"]
    assert staff.post(url, json={"kind": "counter_sync"}).status_code == 422
    assert staff.post(url, json={"kind": "add", "amount": "NaN"}).status_code == 422
    with container.session_factory() as session:
        assert len(container.tokens.tokens_for_meter(session, meter.id)) == 2  # the world's and the one paid


def test_a_site_chooses_its_token_unit(setup: tuple[FastAPI, Container, World, Tokens]) -> None:
    app, container, world, _ = setup
    staff = _staff(app, container, "wanjiru", Role.BILLING, world.a.site_id)
    url = f"/api/v1/sites/{world.a.site_id}/offline-tokens"
    assert staff.get(url).json()["unit_size"] == 100
    changed = staff.put(url, json={"credit_kind": "money", "unit_size": 50})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["credit_kind"], changed.json()["max_per_token"]) == ("money", 50 * 995)
    [entry] = [e for e in _entries(container, "offline_tokens.configure_site") if e.actor != "world"]
    assert (entry.role, json.loads(entry.before or "{}")["credit_kind"]) == ("billing", "energy")
    assert staff.get(url).json()["credit_kind"] == "money"
    # Meters already provisioned keep their unit: A's meter still takes energy.
    meter_url = f"/api/v1/meters/{world.a.serial}/offline-tokens"
    assert staff.post(meter_url, json={"kind": "add", "energy_wh": 100}).status_code == 201
    assert staff.put(url, json={"credit_kind": "water", "unit_size": 50}).status_code == 422
    assert staff.put(url, json={"credit_kind": "energy", "unit_size": 0}).status_code == 422
    # An auditor reads the unit; a customer has no site-wide view of it.
    auditor = _staff(app, container, "auditor", Role.AUDITOR, world.a.site_id)
    assert auditor.get(url).status_code == 200
    assert auditor.put(url, json={"credit_kind": "energy", "unit_size": 10}).status_code == 403
    customer = _customer(app, container, world, world.a.customer_id, "customer-a1")
    assert customer.get(url).status_code == 404


def test_tokens_are_seen_only_on_ones_own_meters_and_digits_not_by_auditors(
    setup: tuple[FastAPI, Container, World, Tokens],
) -> None:
    app, container, world, issued = setup
    mine_digits = issued.digits[world.a.serial]
    grouped = readable(mine_digits)
    mine = _customer(app, container, world, world.a.customer_id, "customer-a1")
    own = mine.get(f"/api/v1/meters/{world.a.serial}/offline-tokens")
    assert own.status_code == 200, own.text
    assert [(t["token"], t["energy_wh"]) for t in own.json()] == [(grouped, 5_000)]
    neighbours = mine.get(f"/api/v1/meters/{world.a2.serial}/offline-tokens")
    assert neighbours.status_code == 404
    assert issued.digits[world.a2.serial] not in neighbours.text
    assert (
        mine.post(f"/api/v1/meters/{world.a.serial}/offline-tokens", json={"kind": "disable"}).status_code
        == 403
    )

    auditor = _staff(app, container, "auditor", Role.AUDITOR, world.a.site_id)
    seen = auditor.get(f"/api/v1/meters/{world.a.serial}/offline-tokens")
    assert seen.status_code == 200
    assert [(t["token"], t["payment_reference"]) for t in seen.json()] == [(None, "PAY-A1")]
    assert mine_digits not in seen.text

    # Site B's staff: site A's meters and site answer as if they did not exist, whatever the route.
    b_staff = _staff(app, container, "operator-b", Role.OPERATOR, world.b.site_id)
    a_meter = f"/api/v1/meters/{world.a.serial}/offline-tokens"
    missing = "/api/v1/meters/MTR-NOPE/offline-tokens"
    for path in (a_meter, missing):
        listed = b_staff.get(path)
        assert listed.status_code == 404
        assert mine_digits not in listed.text
        assert "PAY-A1" not in listed.text
        assert b_staff.post(path, json={"kind": "disable"}).status_code == 404
        assert b_staff.post(f"{path}/provision").status_code == 404
    a_site = f"/api/v1/sites/{world.a.site_id}/offline-tokens"
    assert b_staff.get(a_site).status_code == 404
    assert b_staff.put(a_site, json={"credit_kind": "money", "unit_size": 1}).status_code == 404
    assert b_staff.get(a_meter).json()["detail"] == b_staff.get(missing).json()["detail"].replace(
        "MTR-NOPE", world.a.serial
    )
    with container.session_factory() as session:
        meter = container.registry.meter_by_serial(session, world.a.serial)
        assert len(container.tokens.tokens_for_meter(session, meter.id)) == 1  # nothing issued by B
        assert container.tokens.site_settings(session, world.a.site_id).credit_kind is CreditKind.ENERGY
