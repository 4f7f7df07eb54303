"""Bills over HTTP: a customer sees their own bill and what the current cycle costs so far; billing staff run a
site's billing (once, whatever the retries), and the run is in the operation log."""

from __future__ import annotations

from decimal import Decimal

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


def test_the_invoice_as_html_and_pdf_carries_the_bill(setup: tuple[FastAPI, Container, World]) -> None:
    app, container, world = setup
    me = make_person(
        container, "customer-a1", [(Role.CUSTOMER, world.a.site_id)], customer_ids=[world.a.customer_id]
    )
    client = token_client(app, container, me, [Role.CUSTOMER], [world.a.site_id])
    html = client.get(f"/api/v1/bills/{world.a.bill_id}/invoice.html")
    assert html.status_code == 200
    assert html.headers["content-type"].startswith("text/html")
    for text in ("Customer A1 Secretname", "ACC-A1", "2026-03-01", "119.52", "11.952 kWh"):
        assert text in html.text, text
    pdf = client.get(f"/api/v1/bills/{world.a.bill_id}/invoice.pdf")
    assert pdf.status_code == 200
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")
    assert client.get(f"/api/v1/bills/{world.b.bill_id}/invoice.pdf").status_code == 404  # another site's


def test_the_html_invoice_escapes_names_and_the_pdf_holds_the_figures() -> None:
    from datetime import UTC, date, datetime

    from openami.billing.interfaces import BillInfo, BillLineInfo, BillStatus
    from openami.billing.invoice import InvoiceData, invoice_html, invoice_pdf
    from openami.registry.interfaces import AccountInfo, CustomerInfo, SiteInfo

    line = BillLineInfo(
        "energy", "energy all_year/all", None, None, Decimal("12.5"), "kWh", Decimal("10"), 12500
    )
    bill = BillInfo(
        7, 1, 1, date(2026, 3, 1), date(2026, 4, 1), "KES", 12500, 12500, 0, 3, BillStatus.ISSUED, None, None,
        datetime(2026, 4, 2, tzinfo=UTC), (line,),
    )  # fmt: skip
    site = SiteInfo(1, "KSM", "Kisumu", "Africa/Nairobi", "KES", "KE", None, datetime(2026, 1, 1, tzinfo=UTC))
    data = InvoiceData(bill, site, AccountInfo(1, 1, 1, "A-1", "postpaid"),
                       CustomerInfo(1, 1, "C-1", "<script>alert(1)</script> 王芳", None, None))  # fmt: skip
    html = invoice_html(data)
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "3 of the intervals billed" in html  # estimated intervals are said
    assert "2026-03-31" in html  # the last day billed, not the day after
    chinese = invoice_pdf(data, compress=False)
    assert chinese.startswith(b"%PDF-")
    assert b"STSong-Light" in chinese  # the Chinese name is set in a font that has it
    latin = InvoiceData(bill, site, data.account, CustomerInfo(1, 1, "C-1", "Achieng Otieno", None, None))
    raw = invoice_pdf(latin, compress=False)
    assert b"125.00" in raw
    assert b"STSong-Light" not in raw
