"""The payments router over HTTP: a customer tops up through the sandbox page, the webhook credits once, the
receipt shows; forged webhooks are refused with 400; another customer's payments answer 404."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from openami.api.app import create_app
from openami.bootstrap import Container, bootstrap
from openami.common.clock import ManualClock
from openami.config import Settings
from openami.ledger.service import LedgerService
from openami.prepayment.payments import PaymentService
from openami.prepayment.payments_api import router
from openami.prepayment.providers import EventKind
from openami.prepayment.providers.sandbox import SandboxProvider
from openami.security.models import Role
from openami.storage import migrate
from openami.storage.db import unit_of_work
from tests.auth_helpers import make_person, sign_in


@pytest.fixture
def setup(sqlite_url: str) -> Iterator[tuple[FastAPI, Container, SandboxProvider, list[int]]]:
    migrate.upgrade(sqlite_url)
    clock = ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    container = bootstrap(Settings(database_url=sqlite_url), clock=clock)
    sandbox = SandboxProvider(b"api-sandbox-secret-0123456789", clock, base_url="http://testserver")
    app = create_app(container)
    app.include_router(router)
    ledger = LedgerService(clock, container.registry)
    app.state.payments = PaymentService(clock, container.registry, ledger, [sandbox])
    with unit_of_work(container.session_factory) as session:
        site = container.registry.create_site(
            session,
            code="KSM",
            name="Site KSM",
            timezone="Africa/Nairobi",
            currency="KES",
            holiday_country="KE",
        )
        ids = []
        for n in (1, 2):
            customer = container.registry.create_customer(
                session, site_id=site.id, reference=f"C-{n}", name=f"C {n}"
            )
            account = container.registry.create_account(
                session, site_id=site.id, customer_id=customer.id, number=f"P-{n}", kind="prepaid"
            )
            ids += [site.id, customer.id, account.id]
    yield app, container, sandbox, ids
    container.engine.dispose()


def test_a_customer_pays_in_the_sandbox_and_gets_a_receipt(
    setup: tuple[FastAPI, Container, SandboxProvider, list[int]],
) -> None:
    app, container, _sandbox, (site_id, customer_id, account_id, _, other_customer, other_account) = setup
    amina = make_person(container, "amina", [(Role.CUSTOMER, site_id)], customer_ids=[customer_id])
    client = sign_in(app, container, amina)
    started = client.post(f"/api/v1/accounts/{account_id}/payments/checkout", json={"amount": "25.00"})
    assert started.status_code == 200, started.text
    checkout = started.json()
    assert checkout["currency"] == "KES"
    page = client.get(checkout["redirect_url"])
    assert page.status_code == 200
    assert "Pay 25.00 KES" in page.text
    paid = client.post(checkout["redirect_url"] + "/succeeded")
    assert paid.status_code == 200
    assert "applied" in paid.text
    again = client.post(checkout["redirect_url"] + "/succeeded")
    assert "duplicate" in again.text

    listed = client.get(f"/api/v1/accounts/{account_id}/payments").json()
    assert [(p["status"], p["credited"], p["amount"]) for p in listed] == [("succeeded", True, "25.00")]
    receipt = client.get(f"/api/v1/payments/{checkout['payment_id']}/receipt")
    assert receipt.status_code == 200
    assert receipt.json()["amount"] == "25.00"
    html = client.get(f"/api/v1/payments/{checkout['payment_id']}/receipt.html")
    assert "25.00 KES" in html.text

    bystander = make_person(container, "bystander", [(Role.CUSTOMER, site_id)], customer_ids=[other_customer])
    other = sign_in(app, container, bystander)
    assert other.get(f"/api/v1/payments/{checkout['payment_id']}/receipt").status_code == 404
    assert (
        other.post(f"/api/v1/accounts/{account_id}/payments/checkout", json={"amount": "1"}).status_code
        == 404
    )
    assert (
        other.post(
            f"/api/v1/accounts/{other_account}/payments/checkout", json={"amount": "0.001"}
        ).status_code
        == 422
    )


def test_webhooks_answer_by_outcome(setup: tuple[FastAPI, Container, SandboxProvider, list[int]]) -> None:
    app, container, sandbox, (_, _, account_id, *_) = setup
    service: PaymentService = app.state.payments
    with unit_of_work(container.session_factory) as session:
        payment = service.start_checkout(
            session, account_id=account_id, amount_minor=1_000, provider="sandbox", actor="t", role="admin"
        ).payment
    client = TestClient(app)
    body = sandbox.event_body(
        EventKind.SUCCEEDED, payment.provider_payment_id or "", payment.reference, 1_000, "KES"
    )
    ok = client.post("/api/v1/payments/webhooks/sandbox", content=body, headers=sandbox.sign(body))
    assert ok.status_code == 200
    assert ok.json()["outcome"] == "applied"
    forged = client.post(
        "/api/v1/payments/webhooks/sandbox",
        content=body,
        headers=SandboxProvider(b"x" * 20, container.clock).sign(body),
    )
    assert forged.status_code == 400
    assert forged.json()["reason"].startswith("bad_signature")
    assert client.post("/api/v1/payments/webhooks/nope", content=body).status_code == 404
    assert client.get("/api/v1/payments/sandbox/checkout/garbage.token").status_code == 422
