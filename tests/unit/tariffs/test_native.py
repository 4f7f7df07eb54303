"""The native tariff format: what it refuses, and where it says the fault is; versions and their proration.

Every refusal is a `ValidationError` whose `location` is the path to the faulty field (`tariff.schedules.summer
.weekday`, `tariff.versions[1].energy`, or the file's path when read from a file) and whose message names the
value at fault.
"""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from openami.common.errors import ValidationError
from openami.tariffs.calendar import utc_seconds
from openami.tariffs.model import Component, DayType, TierAllocation, TierBasis
from openami.tariffs.native import load_tariff, parse_tariff
from openami.tariffs.pricing import Load, bill_periods

KWH = 1_000_000  # mWh


def two_seasons() -> dict[str, Any]:
    """A valid tariff: summer and winter, peak on weekday afternoons, tiers, fixed, demand, export, a tax."""
    return {
        "name": "two seasons",
        "currency": "USD",
        "timezone": "America/New_York",
        "periods": ["peak", "off_peak"],
        "seasons": {"summer": [["06-01", "09-30"]], "winter": [["10-01", "05-31"]]},
        "schedules": {
            "summer": {"weekday": {"00:00": "off_peak", "15:00": "peak", "19:00": "off_peak"},
                       "weekend": {"00:00": "off_peak"}},
            "winter": {"weekday": {"00:00": "off_peak", "17:00": "peak", "20:00": "off_peak"},
                       "weekend": {"00:00": "off_peak"}},
        },
        "tiers": {"bounds_kwh": [500, 1000], "basis": "monthly", "allocation": "pro_rata"},
        "energy": {
            "summer/peak": [0.30, 0.35, 0.40], "summer/off_peak": [0.10, 0.12, 0.14],
            "winter/peak": [0.20, 0.25, 0.30], "winter/off_peak": [0.08, 0.10, 0.12],
        },
        "fixed": {"per_month": 10, "per_day": 0.5},
        "minimum": {"per_month": 15},
        "demand": {"window_minutes": 15, "flat_per_kw": 2, "per_kw": {"summer/peak": 8}},
        "export": {"mode": "net_metering", "price_per_kwh": 0.05},
        "taxes": [{"name": "sales tax", "rate": 0.06, "applies_to": ["energy", "fixed"]}],
    }  # fmt: skip


def refused(data: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        parse_tariff(data)
    return caught.value


def test_the_valid_example_compiles_field_by_field() -> None:
    t = parse_tariff(two_seasons())
    (v,) = t.versions
    assert (t.currency, t.timezone, t.rounding_digits) == ("USD", "America/New_York", 2)
    assert v.effective_from is None
    assert v.schedules["summer", DayType.WEEKDAY] == ((0, "off_peak"), (900, "peak"), (1140, "off_peak"))
    assert v.schedules["winter", DayType.SUNDAY] == ((0, "off_peak"),)
    # Holidays are priced as Sundays unless the schedule names them.
    assert v.schedules["summer", DayType.HOLIDAY] == v.schedules["summer", DayType.SUNDAY]
    assert v.tiers is not None
    assert (v.tiers.bounds_kwh, v.tiers.basis, v.tiers.allocation) == (
        (Decimal(500), Decimal(1000)), TierBasis.MONTHLY, TierAllocation.PRO_RATA)  # fmt: skip
    assert v.energy_prices["winter/peak"] == (Decimal("0.2"), Decimal("0.25"), Decimal("0.3"))
    assert (v.fixed_per_month, v.fixed_per_day, v.minimum_per_month) == (10, Decimal("0.5"), 15)
    assert v.demand is not None
    assert v.demand.price_per_kw == {"summer/peak": 8}
    assert v.taxes[0].applies_to == frozenset({Component.ENERGY, Component.FIXED})


# --- schedules -------------------------------------------------------------------------------------------------


def test_a_schedule_naming_an_undefined_period_is_refused_where_it_is_named() -> None:
    data = two_seasons()
    data["schedules"]["summer"]["weekday"]["15:00"] = "shoulder"
    error = refused(data)
    assert error.location == "tariff.schedules.summer.weekday"
    assert "undefined period 'shoulder' at 15:00" in error.message


def test_a_schedule_for_an_undefined_season_and_a_season_without_a_schedule() -> None:
    data = two_seasons()
    data["schedules"]["spring"] = data["schedules"]["summer"]
    error = refused(data)
    assert (error.location, "undefined season(s) spring" in error.message) == ("tariff.schedules", True)
    data = two_seasons()
    del data["schedules"]["winter"]
    error = refused(data)
    assert (error.location, error.message) == ("tariff.schedules.winter", "no schedule for this season")


def test_a_season_missing_a_day_type_is_refused() -> None:
    data = two_seasons()
    data["schedules"]["winter"] = {"weekday": {"00:00": "off_peak"}, "saturday": {"00:00": "off_peak"}}
    error = refused(data)
    assert (error.location, error.message) == ("tariff.schedules.winter", "no schedule for sundays")


@pytest.mark.parametrize(
    ("slots", "fault"),
    [
        ({"00:00": "off_peak", "25:00": "peak"}, "a start time must be \"HH:MM\", got '25:00'"),
        ({"00:00": "off_peak", "8:00": "peak"}, "a start time must be \"HH:MM\", got '8:00'"),
        ({"00:00": "off_peak", "08:60": "peak"}, "a start time must be \"HH:MM\", got '08:60'"),
        ({"00:00": "off_peak", "noon": "peak"}, "a start time must be \"HH:MM\", got 'noon'"),
        ({"07:00": "off_peak", "15:00": "peak"}, 'the day must start at "00:00"'),
        ({}, 'the day must start at "00:00"'),
    ],
)
def test_bad_times_are_refused_in_their_schedule(slots: dict[str, str], fault: str) -> None:
    data = two_seasons()
    data["schedules"]["winter"]["weekday"] = slots
    error = refused(data)
    assert (error.location, error.message) == ("tariff.schedules.winter.weekday", fault)


def test_a_day_type_given_twice_is_refused() -> None:
    data = two_seasons()
    data["schedules"]["summer"]["saturday"] = {"00:00": "peak"}  # "weekend" already covers Saturday
    error = refused(data)
    assert (error.location, error.message) == ("tariff.schedules.summer.saturday", "saturday is given twice")


def test_all_then_a_day_type_means_the_same_as_the_day_type_then_all() -> None:
    # {holiday: ..., all: ...} compiles (holidays off-peak, the rest as `all`); YAML and JSON mappings carry no
    # meaning in their key order, so {all: ..., holiday: ...} must compile to the same schedules.
    data = two_seasons()
    day = {"00:00": "off_peak", "15:00": "peak", "19:00": "off_peak"}
    data["schedules"]["summer"] = {"holiday": {"00:00": "off_peak"}, "all": day}
    expected = parse_tariff(data).versions[0].schedules
    data["schedules"]["summer"] = {"all": day, "holiday": {"00:00": "off_peak"}}
    assert parse_tariff(data).versions[0].schedules == expected


# --- seasons ---------------------------------------------------------------------------------------------------


def test_overlapping_seasons_are_refused_naming_the_first_shared_day() -> None:
    data = two_seasons()
    data["seasons"]["summer"] = [["05-15", "09-30"]]
    error = refused(data)
    assert (error.location, error.message) == ("tariff.seasons", "seasons overlap on 05-15: summer, winter")


def test_a_day_no_season_covers_is_refused() -> None:
    data = two_seasons()
    data["seasons"]["winter"] = [["10-02", "05-31"]]
    error = refused(data)
    assert (error.location, error.message) == ("tariff.seasons", "no season covers 10-01")
    # 29 February belongs to a season too: a range ending on the 28th leaves it out.
    data["seasons"] = {"summer": [["03-01", "09-30"]], "winter": [["10-01", "12-31"], ["01-01", "02-28"]]}
    assert refused(data).message == "no season covers 02-29"


@pytest.mark.parametrize(
    ("ranges", "location", "message"),
    [
        ([["June 1", "09-30"]], "tariff.seasons.summer[0]", "a day is \"MM-DD\", got 'June 1'"),
        ([["06-01", "13-01"]], "tariff.seasons.summer[0]", "no such day '13-01'"),
        ([["06-01", "06-31"]], "tariff.seasons.summer[0]", "no such day '06-31'"),
        (
            [["06-01"]],
            "tariff.seasons.summer[0]",
            'must be ["MM-DD", "MM-DD"] (first and last day, inclusive)',
        ),
        ([], "tariff.seasons.summer", 'must be a list of ["MM-DD", "MM-DD"] ranges'),
    ],
)
def test_bad_season_ranges_are_refused(ranges: Any, location: str, message: str) -> None:
    data = two_seasons()
    data["seasons"]["summer"] = ranges
    error = refused(data)
    assert (error.location, error.message) == (location, message)


# --- tiers and prices ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bounds", "location", "message"),
    [
        ([500, 500], "tariff.tiers.bounds_kwh[1]", "tiers must increase: 500 kWh is not above 500 kWh"),
        ([800, 300], "tariff.tiers.bounds_kwh[1]", "tiers must increase: 300 kWh is not above 800 kWh"),
        ([0, 300], "tariff.tiers.bounds_kwh[0]", "tiers must increase: 0 kWh is not above 0 kWh"),
        ([500, "lots"], "tariff.tiers.bounds_kwh[1]", "must be a number, got 'lots'"),
        ([], "tariff.tiers.bounds_kwh", "must be a non-empty list of tier upper bounds in kWh"),
    ],
)
def test_tiers_not_increasing_are_refused_at_the_bound(bounds: Any, location: str, message: str) -> None:
    data = two_seasons()
    data["tiers"]["bounds_kwh"] = bounds
    error = refused(data)
    assert (error.location, error.message) == (location, message)


def test_yearly_tiers_must_fill_chronologically_and_net_metering_needs_pro_rata() -> None:
    data = two_seasons()
    data["tiers"]["basis"] = "yearly"
    error = refused(data)
    assert (error.location, error.message) == (
        "tariff.tiers.allocation", "yearly tiers fill chronologically: use allocation chronological")  # fmt: skip
    data["tiers"]["allocation"] = "chronological"
    error = refused(data)  # the example nets import and export, which chronological tiers cannot follow
    assert error.location == "tariff.tiers.allocation"
    assert error.message.startswith("net metering nets a whole bill period before tiers apply")
    data["export"]["mode"] = "net_billing"
    tiers = parse_tariff(data).versions[0].tiers
    assert tiers is not None
    assert (tiers.basis, tiers.allocation) == (TierBasis.YEARLY, TierAllocation.CHRONOLOGICAL)


def test_a_missing_price_is_refused_naming_the_season_and_period() -> None:
    data = two_seasons()
    del data["energy"]["winter/peak"]
    error = refused(data)
    assert (error.location, error.message) == (
        "tariff.energy", "no price for winter/peak, which the schedules use")  # fmt: skip


@pytest.mark.parametrize(
    ("prices", "message"),
    [
        ([0.20, 0.25], "needs 3 price(s), one per tier, got 2"),
        ([0.20, 0.25, 0.30, 0.35], "needs 3 price(s), one per tier, got 4"),
        (0.20, "needs 3 price(s), one per tier, got 1"),
    ],
)
def test_a_price_list_of_the_wrong_length_is_refused_at_its_key(prices: Any, message: str) -> None:
    data = two_seasons()
    data["energy"]["winter/peak"] = prices
    error = refused(data)
    assert (error.location, error.message) == ("tariff.energy.winter/peak", message)


def test_a_price_that_is_not_a_number_or_for_an_unknown_season_is_refused() -> None:
    data = two_seasons()
    data["energy"]["winter/peak"] = [0.20, "cheap", 0.30]
    assert refused(data).location == "tariff.energy.winter/peak[1]"
    data = two_seasons()
    data["energy"]["autumn/peak"] = [0.1, 0.2, 0.3]
    error = refused(data)
    assert (error.location, error.message) == (
        "tariff.energy.autumn/peak", "undefined season 'autumn' (seasons: summer, winter)")  # fmt: skip


# --- unknown fields and other components -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "location", "unknown"),
    [
        ((), "tariff", "colour"),
        (("fixed",), "tariff.fixed", "per_week"),
        (("tiers",), "tariff.tiers", "bound"),
        (("demand",), "tariff.demand", "ratchet"),
        (("export",), "tariff.export", "cap_kwh"),
        (("schedules", "summer"), "tariff.schedules.summer", "weekdays"),
    ],
)
def test_unknown_fields_are_refused_where_they_appear(
    path: tuple[str, ...], location: str, unknown: str
) -> None:
    data = two_seasons()
    target = data
    for key in path:
        target = target[key]
    target[unknown] = 1
    error = refused(data)
    assert error.location == location
    assert error.message.startswith(f"unknown field(s) {unknown} (allowed: ")


@pytest.mark.parametrize(
    ("change", "location", "message"),
    [
        ({"currency": "usd"}, "tariff.currency", "must be an ISO 4217 code such as USD, got 'usd'"),
        ({"timezone": "Mars/Olympus"}, "tariff.timezone", "unknown IANA time zone 'Mars/Olympus'"),
        ({"holidays": {"country": "XX"}}, "tariff.holidays.country", "the holidays package knows no country 'XX'"),
        ({"demand": {"window_minutes": 20}}, "tariff.demand.window_minutes", "must be 5, 10, 15, 30 or 60, got 20"),
        ({"export": {"mode": "net_metering"}}, "tariff.export", "missing price_per_kwh (the credit per exported kWh)"),
        ({"fixed": {"per_day": -1}}, "tariff.fixed.per_day", "cannot be negative, got -1"),
        ({"taxes": [{"name": "vat", "rate": 16}]}, "tariff.taxes[0].rate",
         "a rate is a fraction from 0 to below 1 (0.16 for 16 %), got 16"),
        ({"periods": ["peak", "peak"]}, "tariff.periods", "a period is named twice"),
        ({"periods": ["on peak", "off_peak"]}, "tariff.periods[0]",
         "a name is a letter then letters, digits, _ or - (40 at most), got 'on peak'"),
    ],
)  # fmt: skip
def test_other_bad_fields_are_refused_where_they_are(
    change: dict[str, Any], location: str, message: str
) -> None:
    error = refused(two_seasons() | change)
    assert (error.location, error.message) == (location, message)


# --- versions and files ----------------------------------------------------------------------------------------


def versioned(*starts: str | None) -> dict[str, Any]:
    version = {k: v for k, v in two_seasons().items() if k not in {"name", "currency", "timezone"}}
    return {
        "name": "versioned",
        "currency": "USD",
        "timezone": "UTC",
        "versions": [copy.deepcopy(version) | {"effective_from": s} for s in starts],
    }


def test_versions_are_checked_each_at_its_own_place() -> None:
    data = versioned(None, "2026-01-11")
    data["versions"][1]["schedules"]["winter"]["weekday"]["17:00"] = "super_peak"
    error = refused(data)
    assert error.location == "tariff.versions[1].schedules.winter.weekday"
    data = versioned(None, "2026-01-11")
    data["versions"][1]["effective_from"] = "11 January"
    error = refused(data)
    assert (error.location, error.message) == (
        "tariff.versions[1].effective_from", "must be a date YYYY-MM-DD, got '11 January'")  # fmt: skip


@pytest.mark.parametrize(
    ("starts", "message"),
    [
        (("2026-02-01", "2026-01-01"), "versions must be in order of `effective_from`, each date once"),
        (("2026-01-01", "2026-01-01"), "versions must be in order of `effective_from`, each date once"),
        ((None, None), "every version but the first needs `effective_from`"),
    ],
)
def test_versions_out_of_order_are_refused(starts: tuple[str | None, ...], message: str) -> None:
    error = refused(versioned(*starts))
    assert (error.location, error.message) == ("tariff.versions", message)


def test_versions_and_top_level_version_fields_together_are_refused() -> None:
    data = versioned(None) | {"periods": ["peak"]}
    error = refused(data)
    assert error.location == "tariff"
    assert "either `versions` or one version's fields" in error.message


def test_a_file_is_named_in_its_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\ncurrency: USD\ntimezone: UTC\nperiods: [all]\nenergy: {all_year/al: 0.1}\n", "utf-8"
    )
    with pytest.raises(ValidationError) as caught:
        load_tariff(bad)
    assert caught.value.location == f"{bad}, tariff.energy.all_year/al"
    assert caught.value.message == "undefined period 'al' (periods: all)"
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "x",', encoding="utf-8")
    with pytest.raises(ValidationError) as caught:
        load_tariff(broken)
    assert (caught.value.location, caught.value.message.startswith("not valid JSON")) == (str(broken), True)
    with pytest.raises(ValidationError) as caught:
        load_tariff(tmp_path / "missing.yaml")
    assert caught.value.location == str(tmp_path / "missing.yaml")


# --- a version that changes mid-month ---------------------------------------------------------------------------


def flat_versions(*versions: dict[str, Any]) -> Any:
    return parse_tariff(
        {
            "name": "mid-month change",
            "currency": "USD",
            "timezone": "UTC",
            "versions": [{"periods": ["all"]} | v for v in versions],
        }
    )


def january_hours(kwh_per_hour: int = 1) -> Load:
    start = utc_seconds(datetime(2026, 1, 1, tzinfo=UTC))
    starts = start + 3600 * np.arange(31 * 24, dtype=np.int64)
    return Load(starts, np.full(len(starts), kwh_per_hour * KWH, dtype=np.int64), 3600)


def test_a_price_change_mid_month_prorates_the_monthly_fixed_charge_by_days() -> None:
    t = flat_versions(
        {"energy": {"all_year/all": 0.10}, "fixed": {"per_month": 31}, "minimum": {"per_month": 31}},
        {"effective_from": "2026-01-11", "energy": {"all_year/all": 0.20}, "fixed": {"per_month": 62},
         "minimum": {"per_month": 620}},
    )  # fmt: skip
    bill = bill_periods(t, january_hours(), [(date(2026, 1, 1), date(2026, 2, 1))])[0]
    lines = [(line.component, line.quantity, line.unit_price, line.amount) for line in bill.lines]
    # 1-10 January under the first version: 240 kWh x 0.10 = 24.00; 10/31 of a month x 31 = 10.00.
    # 11-31 January under the second: 504 kWh x 0.20 = 100.80; 21/31 of a month x 62 = 42.00.
    assert lines[:2] == [
        (Component.ENERGY, Decimal(240), Decimal("0.1"), Decimal("24.00")),
        (Component.FIXED, Decimal(10) / Decimal(31), Decimal(31), Decimal("10.00")),
    ]
    assert lines[2:4] == [
        (Component.ENERGY, Decimal(504), Decimal("0.2"), Decimal("100.80")),
        (Component.FIXED, Decimal(21) / Decimal(31), Decimal(62), Decimal("42.00")),
    ]
    # The minimum is prorated the same way: 10/31 x 31 + 21/31 x 620 = 10 + 420 = 430.00, less the 176.80 above.
    assert lines[4] == (Component.MINIMUM, Decimal(1), Decimal("253.20"), Decimal("253.20"))
    assert bill.total() == Decimal("430.00")


def test_a_change_on_the_first_of_the_month_needs_no_proration() -> None:
    t = flat_versions(
        {"energy": {"all_year/all": 0.10}, "fixed": {"per_month": 31}},
        {"effective_from": "2026-02-01", "energy": {"all_year/all": 0.20}, "fixed": {"per_month": 62}},
    )
    bill = bill_periods(t, january_hours(), [(date(2026, 1, 1), date(2026, 2, 1))])[0]
    assert [line.amount for line in bill.lines] == [Decimal("74.40"), Decimal("31.00")]  # 744 x 0.10; 1 x 31


def test_a_bill_before_the_first_version_is_refused() -> None:
    t = flat_versions({"effective_from": "2026-01-11", "energy": {"all_year/all": 0.10}})
    with pytest.raises(ValidationError) as caught:
        bill_periods(t, january_hours(), [(date(2026, 1, 1), date(2026, 2, 1))])
    assert (caught.value.location, caught.value.message) == (
        "tariff 'mid-month change'", "no tariff version is in force on 2026-01-01")  # fmt: skip


def test_a_mid_month_energy_price_change_charges_the_demand_once() -> None:
    # A steady 1 kW all January; both versions charge 10 $/kW on the month's highest hour. Whatever the rule for
    # a demand price that changes mid-month, with the same price and the same 1 kW peak the month owes 10.00.
    t = flat_versions(
        {"energy": {"all_year/all": 0.10}, "demand": {"window_minutes": 60, "flat_per_kw": 10}},
        {"effective_from": "2026-01-16", "energy": {"all_year/all": 0.20},
         "demand": {"window_minutes": 60, "flat_per_kw": 10}},
    )  # fmt: skip
    bill = bill_periods(t, january_hours(), [(date(2026, 1, 1), date(2026, 2, 1))])[0]
    assert bill.total(Component.DEMAND) == Decimal("10.00")


def test_a_tax_rate_change_mid_month_taxes_each_part_at_its_own_rate() -> None:
    # Taxes do change mid-month (Jersey's GST rose two points, 3 % to 5 %, in the summer of 2011); a bill across
    # such a change taxes each part at its own rate.
    # 1-15 January: 360 kWh x 0.10 = 36.00, 3 % = 1.08. 16-31 January: 384 kWh x 0.20 = 76.80, 5 % = 3.84.
    t = flat_versions(
        {"energy": {"all_year/all": 0.10}, "taxes": [{"name": "GST", "rate": 0.03}]},
        {"effective_from": "2026-01-16", "energy": {"all_year/all": 0.20}, "taxes": [{"name": "GST", "rate": 0.05}]},
    )  # fmt: skip
    bill = bill_periods(t, january_hours(), [(date(2026, 1, 1), date(2026, 2, 1))])[0]
    assert bill.total(Component.TAX) == Decimal("4.92")
