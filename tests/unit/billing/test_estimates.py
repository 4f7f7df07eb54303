"""Cost so far and the projected bill: the current cycle priced to now, and to its end from the days so far."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from openami.billing.service import BillingService, add_months, cycle_of
from openami.common.errors import ValidationError
from openami.registry.service import RegistryService
from openami.tariffs.native import parse_tariff
from openami.tariffs.pricing import bill_periods
from tests.unit.billing.conftest import FEB, JAN, Site
from tests.unit.billing.world import (
    TOU,
    hourly_wh,
    household,
    load_of,
    local_midnight,
    make_customer,
    write_intervals,
)

MAR = date(2026, 3, 1)
NOW = datetime(2026, 2, 10, 12, 0, tzinfo=UTC)  # the clock: 15:00 in Nairobi


def by_hour_of_day(n: int) -> int:
    """The same day every day: 0.3 kWh an hour, 1.2 kWh in the evening peak."""
    return 300 + 900 * (18 <= n % 24 < 22)


def test_cycles_run_from_the_cycle_day_to_the_same_day_of_the_next_month() -> None:
    assert cycle_of(date(2026, 2, 10), 1) == (FEB, MAR)
    assert cycle_of(date(2026, 2, 10), 15) == (date(2026, 1, 15), date(2026, 2, 15))
    assert cycle_of(date(2026, 2, 15), 15) == (date(2026, 2, 15), date(2026, 3, 15))
    assert cycle_of(date(2026, 1, 3), 28) == (date(2025, 12, 28), date(2026, 1, 28))
    assert add_months(date(2025, 12, 28), 1) == date(2026, 1, 28)


def test_cost_so_far_prices_the_cycle_to_now(db: Session, billing: BillingService, site: Site) -> None:
    hours = hourly_wh(FEB, date(2026, 2, 12), by_hour_of_day)  # the meter also sent a running hour
    write_intervals(db, site.home.meter, hours)

    cost = billing.cost_so_far(db, site.home.account.id, NOW)

    ended = [(t, wh) for t, wh in hours if t + timedelta(hours=1) <= NOW]
    (expected,) = bill_periods(parse_tariff(TOU), load_of(ended), [(FEB, date(2026, 2, 11))])
    assert (cost.cycle_start, cost.cycle_end, cost.as_of) == (FEB, MAR, NOW)
    assert cost.import_wh == sum(wh for _, wh in ended)
    assert cost.total_minor == int(expected.total() * 100)
    assert cost.intervals_measured == len(ended) == 9 * 24 + 15


def test_cost_so_far_follows_the_account_cycle(db: Session, billing: BillingService, site: Site) -> None:
    billing.set_bill_cycle(db, account_id=site.home.account.id, cycle_day=15)
    february = hourly_wh(FEB, date(2026, 2, 10), by_hour_of_day)
    write_intervals(db, site.home.meter, february)

    cost = billing.cost_so_far(db, site.home.account.id, NOW)

    # January's readings from the 15th (written by the fixture), then February's so far.
    since_15th = [
        (t, wh) for t, wh in hourly_wh(JAN, FEB, household) if t >= local_midnight(date(2026, 1, 15))
    ]
    (expected,) = bill_periods(
        parse_tariff(TOU), load_of(since_15th + february), [(date(2026, 1, 15), date(2026, 2, 11))]
    )
    assert (cost.cycle_start, cost.cycle_end) == (date(2026, 1, 15), date(2026, 2, 15))
    assert cost.import_wh == sum(wh for _, wh in since_15th + february)
    assert cost.total_minor == int(expected.total() * 100)


def test_the_projected_bill_of_a_steady_household_is_its_real_bill(
    db: Session, billing: BillingService, site: Site
) -> None:
    write_intervals(db, site.home.meter, hourly_wh(FEB, date(2026, 2, 10), by_hour_of_day))
    # A gap so far is projected like the days to come.
    projected = billing.projected_bill(db, site.home.account.id, NOW)

    whole = load_of(hourly_wh(FEB, MAR, by_hour_of_day))
    (expected,) = bill_periods(parse_tariff(TOU), whole, [(FEB, MAR)])
    assert projected.import_wh == sum(wh for _, wh in hourly_wh(FEB, MAR, by_hour_of_day))
    assert projected.total_minor == int(expected.total() * 100)
    so_far = billing.cost_so_far(db, site.home.account.id, NOW)
    assert so_far.total_minor < projected.total_minor


def test_with_nothing_measured_the_projection_is_the_fixed_charges(
    db: Session, billing: BillingService, registry: RegistryService, site: Site
) -> None:
    new = make_customer(db, registry, site.info, "A9")
    billing.assign_tariff(db, account_id=new.account.id, tariff_id=site.tariff_id, effective_from=JAN)
    projected = billing.projected_bill(db, new.account.id, NOW)
    # 28 days at 5.00 a day, plus 16 % VAT.
    assert projected.total_minor == 28 * 500 * 116 // 100
    assert projected.import_wh == 0


def test_estimates_need_a_tariff_in_force(
    db: Session, billing: BillingService, registry: RegistryService, site: Site
) -> None:
    new = make_customer(db, registry, site.info, "A9")
    with pytest.raises(ValidationError, match="account 'A9': no tariff in force on 2026-02-01"):
        billing.cost_so_far(db, new.account.id, NOW)
