"""OpenEI URDB import: small records in v7 and v8 spellings, what they compile to, what they price, and refusals."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from openami.cli.main import app
from openami.common.errors import ValidationError
from openami.tariffs.calendar import utc_seconds
from openami.tariffs.model import Component, DayType, ExportMode, TariffVersion
from openami.tariffs.pricing import Bill, Load, bill_periods
from openami.tariffs.urdb import parse_urdb

PEAK = [0] * 16 + [1] * 5 + [0] * 3  # weekdays 16:00-21:00
SUMMER = range(5, 9)  # Jun-Sep, 0-based months


def months(summer: list[int], winter: list[int]) -> list[list[int]]:
    return [list(summer if m in SUMMER else winter) for m in range(12)]


def tou_v8(**extra: Any) -> dict[str, Any]:
    """A two-season time-of-use residential rate in v8 spelling: winter 0/1, summer 2/3 (peak), weekends off-peak."""
    return {
        "label": "5a1b2c3d4e5f60718293a4b5",
        "utility": "Example Electric Co",
        "name": "E-TOU residential",
        "uri": "https://apps.openei.org/IURDB/rate/view/5a1b2c3d4e5f60718293a4b5",
        "sector": "Residential",
        "startdate": 1514764800,
        "energyratestructure": [
            [{"rate": 0.09, "adj": 0.01, "unit": "kWh"}],
            [{"rate": 0.18, "adj": 0.01}],
            [{"rate": 0.11}],
            [{"rate": 0.32}],
        ],
        "energyweekdayschedule": months([2] * 16 + [3] * 5 + [2] * 3, PEAK),
        "energyweekendschedule": months([2] * 24, [0] * 24),
        "fixedchargefirstmeter": 10,
        "fixedchargeunits": "$/month",
        "mincharge": 15,
        "minchargeunits": "$/month",
    } | extra


def only(tariff_version: Any) -> TariffVersion:
    assert len(tariff_version.versions) == 1
    version: TariffVersion = tariff_version.versions[0]
    return version


def hourly_2018(kwh_per_hour: float, hours: int, first: datetime | None = None, export: float = 0) -> Load:
    start = utc_seconds(first or datetime(2018, 1, 1, tzinfo=UTC))
    starts = start + 3600 * np.arange(hours, dtype=np.int64)
    energy = np.full(hours, round(kwh_per_hour * 1_000_000), dtype=np.int64)
    exported = np.full(hours, round(export * 1_000_000), dtype=np.int64) if export else None
    return Load(starts, energy, 3600, exported)


def bill(record: dict[str, Any], load: Load, start: date, end: date, **kw: Any) -> Bill:
    return bill_periods(parse_urdb(record), load, [(start, end)], **kw)[0]


# --- what a record compiles to -----------------------------------------------------------------------------------


def test_v8_tou_record_compiles_to_seasons_periods_and_prices() -> None:
    tariff = parse_urdb(tou_v8())
    assert (tariff.name, tariff.currency, tariff.timezone, tariff.holidays) == (
        "Example Electric Co: E-TOU residential", "USD", "UTC", None,
    )  # fmt: skip
    assert tariff.source.startswith("OpenEI URDB 5a1b2c3d4e5f60718293a4b5")
    version = only(tariff)
    assert version.effective_from is None
    assert [(s.name, s.ranges) for s in version.seasons] == [
        ("jan-may_oct-dec", (((1, 1), (5, 31)), ((10, 1), (12, 31)))),
        ("jun-sep", (((6, 1), (9, 30)),)),
    ]
    assert version.periods == ("p0", "p1", "p2", "p3")
    assert version.schedules["jun-sep", DayType.WEEKDAY] == ((0, "p2"), (960, "p3"), (1260, "p2"))
    for day_type in (DayType.SATURDAY, DayType.SUNDAY, DayType.HOLIDAY):  # holidays as weekends
        assert version.schedules["jan-may_oct-dec", day_type] == ((0, "p0"),)
    assert version.energy_prices == {
        "jan-may_oct-dec/p0": (Decimal("0.10"),),  # rate + adj
        "jan-may_oct-dec/p1": (Decimal("0.19"),),
        "jun-sep/p2": (Decimal("0.11"),),
        "jun-sep/p3": (Decimal("0.32"),),
    }
    assert (version.fixed_per_month, version.fixed_per_day, version.minimum_per_month) == (10, 0, 15)
    assert (version.tiers, version.demand, version.export) == (None, None, None)


def test_v7_and_v8_spellings_of_one_rate_compile_alike() -> None:
    tiers = [{"max": 500, "rate": 0.1, "sell": 0.03}, {"rate": 0.14, "sell": 0.03}]
    v8 = {"energyratestructure": [tiers], "fixedchargefirstmeter": 7.25, "fixedchargeunits": "$/month",
          "mincharge": 12, "minchargeunits": "$/month", "dgrules": "Net Metering"}  # fmt: skip
    v7 = {
        "energyratestructure": [tiers],
        "fixedmonthlycharge": 7.25,
        "minmonthlycharge": 12,
        "usenetmetering": True,
    }
    assert only(parse_urdb(v7)) == only(parse_urdb(v8))
    version = only(parse_urdb(v7))
    assert version.tiers is not None
    assert version.tiers.bounds_kwh == (Decimal(500),)
    assert version.tiers.allocation.value == "pro_rata"  # as NREL SAM allocates tiers across periods
    assert version.export is not None
    assert (version.export.mode, version.export.price_per_kwh) == (ExportMode.NET_METERING, Decimal("0.03"))


def test_items_envelope_imports_the_first_record_and_names_it_in_errors() -> None:
    second = {"energyratestructure": [[{"rate": 0.5}]]}
    tariff = parse_urdb({"items": [tou_v8(), second]})
    assert only(tariff).periods == ("p0", "p1", "p2", "p3")
    with pytest.raises(ValidationError) as caught:
        parse_urdb({"items": [{"energyratestructure": [[{"rate": "cheap"}]]}]}, "rates.json")
    assert caught.value.location == "rates.json.items[0].energyratestructure[0][0].rate"


def test_time_zone_comes_from_a_timezone_key_else_utc() -> None:
    assert parse_urdb(tou_v8(timezone="America/Denver")).timezone == "America/Denver"
    with pytest.raises(ValidationError, match="unknown IANA time zone") as caught:
        parse_urdb(tou_v8(timezone="Mars/Olympus"))
    assert caught.value.location == "urdb.timezone"


@pytest.mark.parametrize(
    ("units", "per_month", "per_day"),
    [
        ("$/month", Decimal(30), Decimal(0)),
        ("$/day", Decimal(0), Decimal(30)),
        ("$/year", Decimal("2.5"), Decimal(0)),
    ],
)
def test_fixed_charge_units(units: str, per_month: Decimal, per_day: Decimal) -> None:
    version = only(parse_urdb(tou_v8(fixedchargefirstmeter=30, fixedchargeunits=units)))
    assert (version.fixed_per_month, version.fixed_per_day) == (per_month, per_day)


def test_fuel_adjustments_add_to_prices_and_split_seasons() -> None:
    flat = {"energyratestructure": [[{"rate": 0.1}]], "fueladjustmentsmonthly": [0.01] * 6 + [0.02] * 6}
    version = only(parse_urdb(flat))
    assert version.energy_prices == {"jan-jun/p0": (Decimal("0.11"),), "jul-dec/p0": (Decimal("0.12"),)}


def test_demand_periods_that_split_an_energy_period_become_their_own_periods() -> None:
    # Energy: one period all day. Demand: period 1 (9.5 $/kW) 16:00-21:00 on weekdays, else period 0 (free).
    record = {
        "energyratestructure": [[{"rate": 0.1}]],
        "demandratestructure": [[{"rate": 0}], [{"rate": 9, "adj": 0.5}]],
        "demandweekdayschedule": [list(PEAK) for _ in range(12)],
        "demandweekendschedule": [[0] * 24 for _ in range(12)],
        "flatdemandstructure": [[{"rate": 4}]],
        "flatdemandmonths": [0] * 12,
        "demandwindow": 30,
    }
    version = only(parse_urdb(record))
    assert version.periods == ("p0_d0", "p0_d1")
    assert version.schedules["all_year", DayType.WEEKDAY] == ((0, "p0_d0"), (960, "p0_d1"), (1260, "p0_d0"))
    assert version.schedules["all_year", DayType.SATURDAY] == ((0, "p0_d0"),)
    assert version.demand is not None
    assert version.demand.window_minutes == 30
    assert version.demand.flat_price_per_kw == 4
    assert version.demand.price_per_kw == {"all_year/p0_d1": Decimal("9.5")}
    # Priced: Tuesday 2 Jan 2018, 2 kWh an hour from 15:00 to 22:00 (30-min windows of 2 kW), else 1 kWh.
    load = hourly_2018(1, 48)
    load.import_mwh[24 + 15 : 24 + 22] = 2_000_000
    january = bill(record, load, date(2018, 1, 1), date(2018, 2, 1))
    demand = {
        line.period: (line.quantity, line.amount)
        for line in january.lines
        if line.component is Component.DEMAND
    }
    assert demand == {None: (Decimal(2), Decimal("8.00")), "all_year/p0_d1": (Decimal(2), Decimal("19.00"))}
    assert january.total(Component.ENERGY) == Decimal("5.50")  # 55 kWh at 0.10, over both energy lines


def test_a_priced_demand_period_spanning_two_energy_periods_is_refused() -> None:
    record = tou_v8(
        demandratestructure=[[{"rate": 8}]],
        demandweekdayschedule=[[0] * 24 for _ in range(12)],
        demandweekendschedule=[[0] * 24 for _ in range(12)],
    )
    with pytest.raises(ValidationError, match=r"demand period 0 spans energy periods 0, 1") as caught:
        parse_urdb(record)
    assert caught.value.location == "urdb.demandweekdayschedule"


def test_flat_demand_by_season_folds_into_single_period_seasons() -> None:
    record = {
        "energyratestructure": [[{"rate": 0.1}]],
        "flatdemandstructure": [[{"rate": 3}], [{"rate": 7}]],
        "flatdemandmonths": [1 if m in SUMMER else 0 for m in range(12)],
    }
    demand = only(parse_urdb(record)).demand
    assert demand is not None
    assert demand.flat_price_per_kw == 0
    assert demand.price_per_kw == {"jan-may_oct-dec/p0": Decimal(3), "jun-sep/p0": Decimal(7)}
    july = bill(
        record, hourly_2018(1.5, 24, datetime(2018, 7, 3, tzinfo=UTC)), date(2018, 7, 1), date(2018, 8, 1)
    )
    assert july.total(Component.DEMAND) == Decimal("10.50")  # 1.5 kW at 7 $/kW


def test_flat_demand_by_season_with_several_periods_is_refused() -> None:
    record = tou_v8(flatdemandstructure=[[{"rate": 3}], [{"rate": 7}]], flatdemandmonths=[0] * 6 + [1] * 6)
    with pytest.raises(ValidationError, match="one flat demand price") as caught:
        parse_urdb(record)
    assert caught.value.location == "urdb.flatdemandmonths"


def test_net_billing_credits_every_exported_kwh_at_the_sell_price() -> None:
    record = {"energyratestructure": [[{"rate": 0.2, "sell": 0.05}]], "dgrules": "Net Billing Instantaneous"}
    export = only(parse_urdb(record)).export
    assert export is not None
    assert export.mode is ExportMode.NET_BILLING
    # 10 h importing 1 kWh and exporting 2 kWh: 10 kWh at 0.20 and 20 kWh credited at 0.05.
    january = bill(record, hourly_2018(1, 10, export=2), date(2018, 1, 1), date(2018, 2, 1))
    assert (january.total(Component.ENERGY), january.total(Component.EXPORT)) == (
        Decimal("2.00"),
        Decimal("-1.00"),
    )


def test_sell_rates_without_dg_rules_mean_net_billing_and_no_sell_means_no_credit() -> None:
    assert only(parse_urdb({"energyratestructure": [[{"rate": 0.2, "sell": 0.05}]]})).export is not None
    assert only(parse_urdb({"energyratestructure": [[{"rate": 0.2}]]})).export is None
    metering = only(parse_urdb({"energyratestructure": [[{"rate": 0.2}]], "dgrules": "Net Metering"})).export
    assert metering is not None
    assert (metering.mode, metering.price_per_kwh) == (ExportMode.NET_METERING, 0)


# --- what a record prices ------------------------------------------------------------------------------------------


def test_weekends_and_given_holidays_price_on_the_weekend_schedule() -> None:
    # 1 kWh every hour of Friday 5 to Monday 8 January 2018; weekday peak 16-21 at 0.19, otherwise 0.10.
    load = hourly_2018(1, 96, datetime(2018, 1, 5, tzinfo=UTC))
    plain = bill(tou_v8(), load, date(2018, 1, 1), date(2018, 2, 1))
    peak = [line.quantity for line in plain.lines if line.period == "jan-may_oct-dec/p1"]
    assert peak == [Decimal(10)]  # Friday and Monday only
    holiday = bill(
        tou_v8(), load, date(2018, 1, 1), date(2018, 2, 1), extra_holidays=frozenset({date(2018, 1, 8)})
    )
    assert [line.quantity for line in holiday.lines if line.period == "jan-may_oct-dec/p1"] == [Decimal(5)]


def test_minimum_and_fixed_charges_apply_per_month() -> None:
    january = bill(tou_v8(), hourly_2018(0.1, 24), date(2018, 1, 1), date(2018, 2, 1))
    assert january.total(Component.FIXED) == 10
    assert january.total() == 15  # the minimum lifts energy (0.10 + 0.19) + fixed (10) to 15


# --- refusals ---------------------------------------------------------------------------------------------------


def edited(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """`base` (default tou_v8()) with the value at `path` ("key", "key.0.1.rate") replaced; None deletes."""
    record = copy.deepcopy(base if base is not None else tou_v8())
    *parents, last = path.split(".")
    target: Any = record
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    key: Any = int(last) if isinstance(target, list) else last
    if value is None:
        del target[key]
    else:
        target[key] = value
    return record


TIERED = {"energyratestructure": [[{"max": 100, "rate": 0.1}, {"rate": 0.2}], [{"max": 100, "rate": 0.3}, {"rate": 0.4}]],
          "energyweekdayschedule": [list(PEAK) for _ in range(12)]}  # fmt: skip
TIERED["energyweekendschedule"] = TIERED["energyweekdayschedule"]


@pytest.mark.parametrize(
    ("record", "location", "message"),
    [
        (edited("energyratestructure.2.0.rate", "cheap"), "urdb.energyratestructure[2][0].rate", "must be a number"),
        (edited("energyratestructure.1.0.rate", None), "urdb.energyratestructure[1][0].rate", "missing"),
        (edited("energyratestructure.0.0.unit", "kWh daily"), "urdb.energyratestructure[0][0].unit", "kWh per month"),
        (edited("energyratestructure.0.0.note", "x"), "urdb.energyratestructure[0][0]", "unknown field(s) note"),
        (edited("energyratestructure.0.0.sell", -1), "urdb.energyratestructure[0][0].sell", "cannot be negative"),
        (edited("energyratestructure.1.0.max", 50, TIERED), "urdb.energyratestructure",
         "periods 0 and 1 disagree on tier maxima ([100] kWh vs [50] kWh)"),
        (edited("energyratestructure.0.1.max", 900, TIERED), "urdb.energyratestructure[0][1].max", "the last tier has a max"),
        (edited("energyratestructure.0.0.max", None, TIERED), "urdb.energyratestructure[0][0].max", "needs a max"),
        ({"energyratestructure": [[{"max": 100, "rate": 0.1}, {"max": 100, "rate": 0.2}, {"rate": 0.3}]]},
         "urdb.energyratestructure[0][1].max", "tiers must increase"),
        ({"energyratestructure": [[]]}, "urdb.energyratestructure[0]", "at least one tier"),
        ({"sector": "Residential"}, "urdb.energyratestructure", "missing"),
        (edited("energyweekdayschedule.3.17", 4), "urdb.energyweekdayschedule[3][17]", "0 to 3"),
        (edited("energyweekdayschedule.3.17", True), "urdb.energyweekdayschedule[3][17]", "0 to 3"),
        (edited("energyweekendschedule.11", [0] * 23), "urdb.energyweekendschedule[11]", "24 hours"),
        (edited("energyweekendschedule", None), "urdb.energyweekendschedule", "4 periods"),
        (edited("fueladjustmentsmonthly", [0.01] * 11), "urdb.fueladjustmentsmonthly", "12 values"),
        (edited("fixedchargeunits", "$/week"), "urdb.fixedchargeunits", "$/month, $/day, $/year"),
        (edited("fixedmonthlycharge", 11), "urdb.fixedmonthlycharge", "disagrees with fixedchargefirstmeter"),
        (edited("fixedchargefirstmeter", -3), "urdb.fixedchargefirstmeter", "cannot be negative"),
        (edited("minchargeunits", "$/year"), "urdb.minchargeunits", "monthly minimum only"),
        (edited("annualmincharge", 100), "urdb.annualmincharge", "monthly minimum charge only"),
        (edited("demandratchetpercentage", [0] * 5 + [0.8] + [0] * 6), "urdb.demandratchetpercentage[5]", "ratchets"),
        (edited("demandreactivepowercharge", 0.5), "urdb.demandreactivepowercharge", "kVAR"),
        (edited("coincidentratestructure", [[{"rate": 5}]]), "urdb.coincidentratestructure", "coincident"),
        (edited("lookbackpercent", 0.5), "urdb.lookbackpercent", "look-back"),
        (edited("demandratestructure", [[{"rate": 5, "max": 10}, {"rate": 7}]]), "urdb.demandratestructure[0]",
         "no tiers"),
        (edited("flatdemandstructure", [[{"rate": 5, "max": 10}]]), "urdb.flatdemandstructure[0][0].max", "unpriced"),
        (edited("flatdemandstructure", [[{"rate": -5}]]), "urdb.flatdemandstructure[0][0]", "cannot be negative"),
        (edited("flatdemandunit", "kVA", edited("flatdemandstructure", [[{"rate": 5}]])), "urdb.flatdemandunit", "kVA"),
        (edited("flatdemandmonths", [0] * 12), "urdb.flatdemandmonths", "without flatdemandstructure"),
        (edited("demandweekdayschedule", [[0] * 24] * 12), "urdb.demandweekdayschedule", "without demandratestructure"),
        (edited("demandwindow", 7, edited("flatdemandstructure", [[{"rate": 5}]])), "urdb.demandwindow", "5, 10, 15"),
        (edited("dgrules", "Net Billing Hourly"), "urdb.dgrules", "within each hour"),
        (edited("dgrules", "Buy All Sell All"), "urdb.dgrules", "sells all generation"),
        (edited("dgrules", "Feed-in"), "urdb.dgrules", "must be one of"),
        (edited("usenetmetering", "yes"), "urdb.usenetmetering", "true or false"),
        (edited("energyratestructure.3.0.sell", 0.07, edited("energyratestructure.0.0.sell", 0.05)),
         "urdb.energyratestructure[1][0].sell", "one export price"),
        (edited("ratchet", 1), "urdb", "unknown URDB field(s) ratchet"),
    ],
)  # fmt: skip
def test_unsupported_or_malformed_fields_are_refused_by_name(
    record: dict[str, Any], location: str, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_urdb(record)
    assert caught.value.location == location
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("data", "location", "message"),
    [
        ([tou_v8()], "urdb", "must be a JSON object"),
        ({"items": []}, "urdb.items", "non-empty list"),
        ({"items": ["x"]}, "urdb.items[0]", "must be an object"),
    ],
)
def test_not_a_record_is_refused(data: Any, location: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_urdb(data)
    assert (caught.value.location, message in caught.value.message) == (location, True)


def test_zero_valued_unsupported_fields_and_descriptive_fields_are_accepted() -> None:
    record = tou_v8(demandratchetpercentage=[0] * 12, demandreactivepowercharge=0, coincidentratestructure=[],
                    lookbackpercent=0, annualmincharge=0, fixedchargeeaaddl=4, voltagecategory="Secondary",
                    energycomments="as filed", enddate=None)  # fmt: skip
    assert only(parse_urdb(record)) == only(parse_urdb(tou_v8()))


# --- through `openami tariff bill` -------------------------------------------------------------------------------


def test_tariff_bill_prices_a_urdb_file(tmp_path: Path) -> None:
    rate = tmp_path / "rate.json"
    rate.write_text(json.dumps({"items": [tou_v8(mincharge=0)]}), encoding="utf-8")
    load = tmp_path / "load.csv"
    load.write_text("kwh\n" + "1\n" * 8760, encoding="utf-8")
    holidays = tmp_path / "holidays.txt"
    holidays.write_text("2018-01-02\n", encoding="utf-8")
    args = ["tariff", "bill", "--tariff", str(rate), "--load", str(load), "--year", "2018", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    january = json.loads(result.stdout)["months"][0]
    # January 2018: 23 weekdays x 5 peak hours = 115 kWh at 0.19; 629 kWh at 0.10; 10 fixed.
    assert (january["energy_kwh"], january["energy_charge"], january["fixed_charge"]) == (744, 84.75, 10)
    assert january["total"] == 94.75
    # A holiday (Tuesday 2 January) prices as a weekend day: 5 peak kWh fewer.
    result = CliRunner().invoke(app, [*args, "--holidays", str(holidays)])
    assert json.loads(result.stdout)["months"][0]["energy_charge"] == 84.30


def test_tariff_bill_names_the_refused_urdb_field(tmp_path: Path) -> None:
    rate = tmp_path / "rate.json"
    rate.write_text(json.dumps(edited("dgrules", "Buy All Sell All")), encoding="utf-8")
    load = tmp_path / "load.csv"
    load.write_text("kwh\n" + "1\n" * 8760, encoding="utf-8")
    result = CliRunner().invoke(
        app, ["tariff", "bill", "--tariff", str(rate), "--load", str(load), "--year", "2018"]
    )
    assert result.exit_code == 2
    assert f"{rate}.dgrules" in result.stderr
    assert "Buy All Sell All" in result.stderr
