"""Property: where the tariff allows it (flat or time of use, charges per day, an export credit; no tiers,
demand, minimum, per-month charges or taxes, whose proration or rounding differs by design), the bills of any
split of a period into consecutive cycles add up to the bill of the whole period, to the minor unit."""

from __future__ import annotations

import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openami.billing.interfaces import Outcome
from openami.billing.service import BillingService
from openami.common.clock import ManualClock
from openami.common.obis import ACTIVE_EXPORT_INTERVAL
from openami.ledger.service import LedgerService
from openami.registry.service import RegistryService
from openami.security.meter_keys import MeterKeyCipher
from openami.storage.all_models import metadata
from openami.storage.db import make_engine, make_session_factory
from tests.conftest import TEST_MASTER_KEY
from tests.unit.billing.world import FLAT, TOU, hourly_wh, make_customer, make_site, write_intervals

START, END = date(2026, 1, 1), date(2026, 3, 1)
DAYS = (END - START).days

FLAT_DAILY = {**FLAT, "fixed": {"per_day": "3.00"}}
TOU_UNTAXED = {k: v for k, v in TOU.items() if k != "taxes"}


@st.composite
def splits(draw: st.DrawFn) -> list[date]:
    """Cut points strictly inside the period, sorted: the cycles run between them."""
    offsets = draw(st.sets(st.integers(1, DAYS - 1), max_size=5))
    return [START + timedelta(days=d) for d in sorted(offsets)]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cuts=splits(),
    document=st.sampled_from([FLAT_DAILY, TOU_UNTAXED]),
    kwh=st.lists(st.integers(0, 4), min_size=24, max_size=24),  # whole kWh per hour of the day
    export_kwh=st.integers(0, 2),
)
def test_bills_of_any_split_add_up_to_the_whole(
    cuts: list[date], document: dict[str, Any], kwh: list[int], export_kwh: int
) -> None:
    clock = ManualClock(datetime(2026, 3, 10, tzinfo=UTC))
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'p.db'}")
        metadata.create_all(engine)
        try:
            registry = RegistryService(clock, MeterKeyCipher([TEST_MASTER_KEY]))
            billing = BillingService(clock, registry, LedgerService(clock, registry))
            with make_session_factory(engine)() as db:
                sites = []
                for code in ("WHOLE", "SPLIT"):
                    site = make_site(db, registry, code)
                    customer = make_customer(db, registry, site, f"{code}-1")
                    tariff = billing.store_tariff(db, site_id=site.id, code="T", document=document)
                    billing.assign_tariff(
                        db, account_id=customer.account.id, tariff_id=tariff.id, effective_from=START
                    )
                    write_intervals(db, customer.meter, hourly_wh(START, END, lambda n: 1000 * kwh[n % 24]))
                    exported = hourly_wh(START, END, lambda n: 1000 * export_kwh * (10 <= n % 24 < 14))
                    write_intervals(db, customer.meter, exported, obis=ACTIVE_EXPORT_INTERVAL)
                    sites.append(site)
                whole = billing.run_billing(db, sites[0].id, START, END).accounts
                pieces = [
                    billing.run_billing(db, sites[1].id, a, b).accounts[0]
                    for a, b in zip([START, *cuts], [*cuts, END], strict=True)
                ]
                bills = [o.bill for o in [*whole, *pieces] if o.outcome is Outcome.BILLED and o.bill]
                assert len(bills) == 1 + len(pieces)
                whole_bill, split_bills = bills[0], bills[1:]
                assert sum(b.total_minor for b in split_bills) == whole_bill.total_minor
                assert sum(b.import_wh for b in split_bills) == whole_bill.import_wh
                for component in ("energy", "fixed", "export"):
                    assert sum(
                        ln.amount_minor for b in split_bills for ln in b.lines if ln.component == component
                    ) == sum(ln.amount_minor for ln in whole_bill.lines if ln.component == component)
        finally:
            engine.dispose()
