"""`openami bill run --site CODE --month YYYY-MM`: one line per account, recorded in the operation log; and the
month's run behind it, which bills each account's cycle ending in the month."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from openami.billing.interfaces import Outcome
from openami.billing.service import BillingService
from openami.cli.billing import app
from openami.security.audit import AuditEntry
from tests.unit.billing.conftest import Site

runner = CliRunner()


def test_bill_run_prints_each_account_and_bills_once(db: Session, site: Site, sqlite_url: str) -> None:
    args = ["run", "--site", "KSM", "--month", "2026-01", "--database-url", sqlite_url]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    assert lines[0].startswith("A1: billed 2026-01-01 to 2026-02-01: bill 1, ")
    assert lines[0].endswith(" KES")
    assert lines[1].startswith("A2: billed 2026-01-01 to 2026-02-01: bill 2, ")
    assert lines[2] == "site KSM, 2026-01: 2 billed, 0 already billed, 0 not billed"

    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert again.output.splitlines()[0] == "A1: already billed 2026-01-01 to 2026-02-01 (bill 1)"
    db.expire_all()
    entries = db.scalars(select(AuditEntry).where(AuditEntry.action == "billing.run")).all()
    assert len(entries) == 2
    assert '"billed":2' in (entries[0].after or "")


def test_bill_run_refuses_a_bad_month_or_site(db: Session, site: Site, sqlite_url: str) -> None:
    bad = runner.invoke(app, ["run", "--site", "KSM", "--month", "2026-13", "--database-url", sqlite_url])
    assert bad.exit_code == 1
    assert "--month: must be YYYY-MM, got '2026-13'" in bad.output
    unknown = runner.invoke(
        app, ["run", "--site", "NOPE", "--month", "2026-01", "--database-url", sqlite_url]
    )
    assert unknown.exit_code == 1
    assert "no site with code 'NOPE'" in unknown.output


def test_a_month_bills_each_account_for_its_cycle_ending_in_it(
    db: Session, billing: BillingService, site: Site
) -> None:
    billing.set_bill_cycle(db, account_id=site.solar.account.id, cycle_day=15)

    january = billing.run_month(db, site.info.id, 2026, 1)
    assert [(r.period_start, r.period_end) for r in january] == [
        (date(2026, 1, 1), date(2026, 2, 1)),
        (date(2025, 12, 15), date(2026, 1, 15)),
    ]
    assert january[0].accounts[0].outcome is Outcome.BILLED
    assert january[0].accounts[0].account_number == "A1"
    sunny = january[1].accounts[0]
    assert (sunny.account_number, sunny.outcome) == ("A2", Outcome.NOT_BILLED)
    assert "lacks 408 of 744 import intervals" in sunny.reason  # no readings before 1 January

    february = billing.run_month(db, site.info.id, 2026, 2)  # the clock is at 10 February
    assert {(o.account_number, o.outcome) for r in february for o in r.accounts} == {
        ("A1", Outcome.NOT_BILLED),
        ("A2", Outcome.NOT_BILLED),
    }
    assert february[1].accounts[0].reason.startswith("the cycle 2026-01-15 to 2026-02-15 is not over until")
