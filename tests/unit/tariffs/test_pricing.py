"""The pricing core, component by component, on loads small enough to check by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from openami.common.errors import ValidationError
from openami.tariffs.calendar import utc_seconds
from openami.tariffs.model import Component
from openami.tariffs.native import parse_tariff
from openami.tariffs.pricing import Bill, Load, bill_periods, month_spans

KWH = 1_000_000  # mWh


def tariff(**version: Any) -> Any:
    base: dict[str, Any] = {
        "name": "test",
        "currency": "USD",
        "timezone": "UTC",
        "periods": ["all"],
        "energy": {"all_year/all": 0.10},
    }
    return parse_tariff(base | version)


def hourly(
    first: tuple[int, ...], kwh: list[float], export: list[float] | None = None, zone: str = "UTC"
) -> Load:
    """Hourly intervals from local time `first` (year, month, day[, hour]) in `zone`."""
    start = utc_seconds(datetime(*first, tzinfo=ZoneInfo(zone)))  # type: ignore[misc]
    starts = start + 3600 * np.arange(len(kwh), dtype=np.int64)
    to_mwh = lambda values: np.array([round(v * KWH) for v in values], dtype=np.int64)  # noqa: E731
    return Load(starts, to_mwh(kwh), 3600, None if export is None else to_mwh(export))


def january(t: Any, load: Load, **kw: Any) -> Bill:
    return bill_periods(t, load, [(date(2026, 1, 1), date(2026, 2, 1))], **kw)[0]


def amounts(bill: Bill, component: Component) -> list[Decimal]:
    return [line.amount for line in bill.lines if line.component is component]


def test_one_price_rounds_each_line_once_half_up() -> None:
    bill = january(tariff(energy={"all_year/all": "0.125"}), hourly((2026, 1, 1), [0.5] * 3))
    assert bill.import_kwh == Decimal("1.5")
    assert amounts(bill, Component.ENERGY) == [Decimal("0.19")]  # 0.1875 -> 0.19


def test_chronological_tiers_fill_in_time_order() -> None:
    t = tariff(
        energy={"all_year/all": [0.10, 0.20]},
        tiers={"bounds_kwh": [2], "basis": "monthly", "allocation": "chronological"},
    )
    bill = january(t, hourly((2026, 1, 1), [1.5, 1.5]))  # 1.5 in tier 1, then 0.5 + 1.0
    assert [(line.tier, line.quantity) for line in bill.lines] == [(1, Decimal(2)), (2, Decimal(1))]
    assert bill.total() == Decimal("0.40")


def test_pro_rata_tiers_share_every_period_alike() -> None:
    t = parse_tariff(
        {
            "name": "tou tiers", "currency": "USD", "timezone": "UTC", "periods": ["day", "night"],
            "schedules": {"all_year": {"all": {"00:00": "night", "08:00": "day", "20:00": "night"}}},
            "energy": {"all_year/day": [0.2, 0.4], "all_year/night": [0.1, 0.3]},
            "tiers": {"bounds_kwh": [10]},
        }
    )  # fmt: skip
    # 24 h of 1 kWh: 12 day, 12 night; the month's 24 kWh is 10/24 in tier 1 and 14/24 in tier 2.
    bill = january(t, hourly((2026, 1, 1), [1.0] * 24))
    quantities = {(line.period, line.tier): line.quantity for line in bill.lines}
    assert quantities[("all_year/day", 1)] == Decimal("5.000000")
    assert quantities[("all_year/night", 2)] == Decimal("7.000000")
    assert bill.total() == Decimal("1.00") + Decimal("2.80") + Decimal("0.50") + Decimal("2.10")


def test_yearly_tiers_carry_from_month_to_month() -> None:
    t = tariff(
        energy={"all_year/all": [0.10, 0.50]},
        tiers={"bounds_kwh": [1000], "basis": "yearly", "allocation": "chronological"},
    )
    hours = 24 * 365
    bills = bill_periods(t, hourly((2026, 1, 1), [0.2] * hours), month_spans(2026))
    # 0.2 kWh an hour is 148.8 kWh in a 31-day month: the 1000 kWh of the year run out in July.
    assert [b.total() for b in bills[:6]] == [Decimal("14.88"), Decimal("13.44"), Decimal("14.88"),
                                              Decimal("14.40"), Decimal("14.88"), Decimal("14.40")]  # fmt: skip
    july = {line.tier: line.quantity for line in bills[6].lines}
    assert july[1] == Decimal(1000) - Decimal("868.8")  # what the first half-year left
    assert july[2] == Decimal("148.8") - july[1]
    assert {line.tier for line in bills[7].lines} == {2}


def test_net_billing_credits_every_exported_kwh() -> None:
    t = tariff(export={"mode": "net_billing", "price_per_kwh": 0.04})
    bill = january(t, hourly((2026, 1, 1), [1.0, 0.0], export=[0.0, 2.0]))
    assert amounts(bill, Component.ENERGY) == [Decimal("0.10")]
    assert amounts(bill, Component.EXPORT) == [Decimal("-0.08")]


def test_net_metering_nets_the_period_then_credits_the_surplus() -> None:
    t = tariff(export={"mode": "net_metering", "price_per_kwh": 0.04})
    covered = january(t, hourly((2026, 1, 1), [3.0, 0.0], export=[0.0, 2.0]))
    assert (amounts(covered, Component.ENERGY), amounts(covered, Component.EXPORT)) == ([Decimal("0.10")], [])
    surplus = january(t, hourly((2026, 1, 1), [1.0, 0.0], export=[0.0, 3.0]))
    assert (amounts(surplus, Component.ENERGY), amounts(surplus, Component.EXPORT)) == (
        [],
        [Decimal("-0.08")],
    )


def test_demand_is_the_highest_window_mean_flat_and_by_period() -> None:
    t = parse_tariff(
        {
            "name": "demand", "currency": "USD", "timezone": "UTC", "periods": ["on", "off"],
            "schedules": {"all_year": {"all": {"00:00": "off", "12:00": "on", "18:00": "off"}}},
            "energy": {"all_year/on": 0, "all_year/off": 0},
            "demand": {"window_minutes": 15, "flat_per_kw": 10, "per_kw": {"all_year/on": 20}},
        }
    )  # fmt: skip
    start = utc_seconds(datetime(2026, 1, 5, 11, 0, tzinfo=UTC))
    starts = start + 300 * np.arange(24, dtype=np.int64)  # 5-minute data, 11:00 to 13:00
    energy = np.full(24, 100_000, dtype=np.int64)  # 0.1 kWh per 5 min = 1.2 kW
    energy[:3] = 500_000  # 11:00-11:15: 1.5 kWh in 15 min = 6 kW, off-peak
    energy[15:18] = 300_000  # 12:15-12:30: 0.9 kWh = 3.6 kW, on-peak
    bill = january(t, Load(starts, energy, 300))
    assert [
        (line.period, line.quantity, line.amount) for line in bill.lines if line.component is Component.DEMAND
    ] == [
        (None, Decimal("6"), Decimal("60.00")),
        ("all_year/on", Decimal("3.6"), Decimal("72.00")),
    ]


def test_dynamic_prices_are_exact_and_a_missing_series_is_refused() -> None:
    t = tariff(energy={"all_year/all": 0}, dynamic_prices=True)
    plain = hourly((2026, 1, 1), [1.0, 2.0, 0.5])
    with pytest.raises(ValidationError, match="price series"):
        january(t, plain)
    priced = Load(plain.start_s, plain.import_mwh, 3600, None, np.array([100_000, 333_333, 1_000_000]))
    [dynamic] = amounts(january(t, priced), Component.DYNAMIC)
    assert dynamic == Decimal("1.27")  # 0.1 + 0.666666 + 0.5 = 1.266666


def test_the_minimum_tops_up_and_taxes_apply_to_what_they_name() -> None:
    t = tariff(
        minimum={"per_month": 5},
        fixed={"per_month": 1},
        taxes=[{"name": "VAT", "rate": 0.1, "applies_to": ["energy", "minimum"]}],
    )
    bill = january(t, hourly((2026, 1, 1), [10.0]))  # energy 1.00, fixed 1.00: 3.00 short of 5
    assert amounts(bill, Component.MINIMUM) == [Decimal("3.00")]
    assert amounts(bill, Component.TAX) == [Decimal("0.40")]  # 10 % of energy 1.00 + minimum 3.00
    assert bill.total() == Decimal("5.40")


def test_a_version_changing_mid_month_prorates_by_days() -> None:
    t = parse_tariff(
        {
            "name": "versions", "currency": "USD", "timezone": "UTC",
            "versions": [
                {"periods": ["all"], "energy": {"all_year/all": 0.10}, "fixed": {"per_month": 31}},
                {"effective_from": "2026-01-11", "periods": ["all"], "energy": {"all_year/all": 0.20},
                 "fixed": {"per_month": 62}},
            ],
        }
    )  # fmt: skip
    load = hourly((2026, 1, 1), [1.0] * (24 * 31))
    bill = january(t, load)
    fixed = amounts(bill, Component.FIXED)
    assert fixed == [Decimal("10.00"), Decimal("42.00")]  # 10 days of 31 at 31, then 21 days of 31 at 62
    assert amounts(bill, Component.ENERGY) == [Decimal("24.00"), Decimal("100.80")]  # 240 kWh, then 504 kWh
    late = parse_tariff(
        {"name": "x", "currency": "USD", "timezone": "UTC",
         "versions": [{"effective_from": "2026-01-01", "periods": ["all"], "energy": {"all_year/all": 1}}]}
    )  # fmt: skip
    with pytest.raises(ValidationError, match="no tariff version is in force on 2025-12-01"):
        bill_periods(late, load, [(date(2025, 12, 1), date(2026, 1, 1))])


def test_holidays_and_local_time_decide_the_period() -> None:
    t = parse_tariff(
        {
            "name": "tou", "currency": "USD", "timezone": "America/New_York", "periods": ["peak", "off"],
            "holidays": {"country": "US"},
            "schedules": {"all_year": {"weekday": {"00:00": "off", "16:00": "peak", "21:00": "off"},
                                       "weekend": {"00:00": "off"}}},
            "energy": {"all_year/peak": 1, "all_year/off": 0},
        }
    )  # fmt: skip

    # 4 p.m. local on an ordinary Monday is peak; on New Year's Day (a Thursday, a holiday) it is not; an extra
    # holiday from the caller is not either. 16:00 EST is 21:00 UTC.
    def peak_kwh(day: date, extra: frozenset[date] = frozenset()) -> Decimal:
        load = hourly((day.year, day.month, day.day, 16), [1.0], zone="America/New_York")
        bill = bill_periods(
            t, load, [(day.replace(day=1), date(day.year, day.month + 1, 1))], extra_holidays=extra
        )[0]
        return bill.total()

    assert peak_kwh(date(2026, 1, 5)) == Decimal(1)
    assert peak_kwh(date(2026, 1, 1)) == Decimal(0)
    assert peak_kwh(date(2026, 1, 6), frozenset({date(2026, 1, 6)})) == Decimal(0)
    # After the spring change (8 March 2026) 16:00 local is 20:00 UTC: still peak.
    assert peak_kwh(date(2026, 3, 9)) == Decimal(1)


def test_bad_loads_are_refused_before_pricing() -> None:
    with pytest.raises(ValidationError, match="cannot be negative"):
        Load(np.array([0, 3600], dtype=np.int64), np.array([1, -1], dtype=np.int64), 3600)
    with pytest.raises(ValidationError, match="must increase"):
        Load(np.array([3600, 0], dtype=np.int64), np.array([1, 1], dtype=np.int64), 3600)
