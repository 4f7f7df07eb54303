"""openami's monthly bills against NREL SAM's `Utilityrate5` (PySAM), on one URDB record read by each side.

Each case is a URDB v8 record: openami compiles it with `parse_urdb`, SAM with PySAM's own URDB converter
(`UtilityRateTools.URDBv8_to_ElectricityRates`), so the two sides share no code. The load is a year of a synthetic
household (and, for export, rooftop solar), hourly and deterministic.

What is aligned, because the two tools differ there by design:
- calendar: SAM's year has 8760 hours, starts on a Monday, knows no holidays and no daylight saving. So the year
  is 2018 (1 January a Monday, not a leap year) in UTC, and openami is given no holidays;
- demand: SAM's peak is the highest hourly kW; openami's is the highest mean over the demand window, which for
  hourly intervals is the interval's mean, so the records say `demandwindow` 60;
- kW: openami states a peak to the watt, so the load is whole Wh per hour (as meters report it);
- rounding: openami rounds each bill line once to the cent; SAM does not round. SAM's bill is split into the
  same lines (energy per period and tier, fixed, demand per period, flat demand, export credit), the split is
  checked to add up to SAM's bill, and each line is rounded as openami does before the months are compared;
- export: SAM's "Net Billing Instantaneous" nets load and generation in each hour; openami is given that hour's
  import and export, as a bidirectional meter records them. Credits stay below each month's charges, so SAM
  carries nothing over between months.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from PySAM import Utilityrate5
from PySAM.UtilityRateTools import URDBv8_to_ElectricityRates

from openami.tariffs.calendar import utc_seconds
from openami.tariffs.model import Component
from openami.tariffs.pricing import Bill, Load, bill_periods, month_spans
from openami.tariffs.urdb import parse_urdb

pytestmark = pytest.mark.slow

YEAR = 2018  # 1 January 2018 is a Monday and the year has 8760 hours: SAM's calendar
HOURS = 8760
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
CENT = Decimal("0.01")


# --- the load ------------------------------------------------------------------------------------------------


def _hours() -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.bool_]]:
    """Hour of day, day of year (0-based) and whether it is a weekend, for every hour of YEAR."""
    index = np.arange(HOURS, dtype=np.int64)
    day = index // 24
    weekday_of_day = np.array(
        [date.fromordinal(date(YEAR, 1, 1).toordinal() + d).weekday() for d in range(365)]
    )
    return index % 24, day, weekday_of_day[day] >= 5


def household_wh() -> NDArray[np.int64]:
    """Hourly consumption (Wh) of a household: a morning and a larger evening peak (later and flatter on
    weekends), winter heating and summer cooling, and a fixed-seed wobble."""
    hour, day, weekend = _hours()
    morning = np.where(weekend, 9.0, 7.0)
    shape = (
        0.22 + 0.55 * np.exp(-(((hour - morning) / 1.4) ** 2)) + 1.05 * np.exp(-(((hour - 19.0) / 2.2) ** 2))
    )
    shape = shape + np.where(weekend, 0.18, 0.0) * ((hour >= 10) & (hour <= 17))
    heating = 0.45 * np.clip(np.cos(2 * np.pi * (day - 15) / 365), 0, None)
    cooling = (
        0.55 * np.clip(np.cos(2 * np.pi * (day - 200) / 365), 0, None) ** 3 * ((hour >= 12) & (hour <= 22))
    )
    wobble = np.random.default_rng(20180101).uniform(0.8, 1.2, HOURS)
    return np.round((shape + heating + cooling) * wobble * 1000).astype(np.int64)


def rooftop_solar_wh() -> NDArray[np.int64]:
    """Hourly generation (Wh) of a 4 kW roof: a daylight arch, longer and higher in summer, and cloudy days."""
    hour, day, _ = _hours()
    half_day = 6.0 + 1.5 * np.cos(2 * np.pi * (day - 172) / 365)
    arch = np.clip(np.cos(np.pi * (hour + 0.5 - 12.5) / (2 * half_day)), 0, None)
    clouds = np.random.default_rng(2018).uniform(0.35, 1.0, 365)[day]
    return np.round(4000 * arch * (0.8 + 0.2 * np.cos(2 * np.pi * (day - 172) / 365)) * clouds).astype(
        np.int64
    )


# --- the tariffs (URDB v8 records) -----------------------------------------------------------------------------


def _rows(summer: list[int], winter: list[int], summer_months: range = range(5, 9)) -> list[list[int]]:
    return [list(summer if m in summer_months else winter) for m in range(12)]


OFF_PEAK_WEEKENDS = [[0] * 24 for _ in range(12)]
EVENING_PEAK = [0] * 16 + [1] * 5 + [0] * 3  # 16:00-21:00
CASES: dict[str, dict[str, Any]] = {
    "a_flat_and_fixed": {
        "name": "flat rate with a customer charge",
        "energyratestructure": [[{"rate": 0.1245, "adj": 0.0101}]],
        "energyweekdayschedule": [[0] * 24 for _ in range(12)],
        "energyweekendschedule": [[0] * 24 for _ in range(12)],
        "fixedchargefirstmeter": 9.5,
        "fixedchargeunits": "$/month",
    },
    "b_tou_two_seasons": {
        "name": "time of use, summer (Jun-Sep) and winter",
        "energyratestructure": [
            [{"rate": 0.0912}],
            [{"rate": 0.1734}],
            [{"rate": 0.1121}],
            [{"rate": 0.3187}],
        ],
        # winter: 0 off-peak, 1 peak 06-09 and 17-21; summer: 2 off-peak, 3 peak 14-20; weekends off-peak.
        "energyweekdayschedule": _rows(
            [2] * 14 + [3] * 6 + [2] * 4, [0] * 6 + [1] * 3 + [0] * 8 + [1] * 4 + [0] * 3
        ),
        "energyweekendschedule": _rows([2] * 24, [0] * 24),
        "fixedchargefirstmeter": 5,
        "fixedchargeunits": "$/month",
    },
    "c_tou_inclining_tiers": {
        "name": "time of use with monthly inclining blocks (150, 350 kWh)",
        "energyratestructure": [
            [{"max": 150, "rate": 0.081}, {"max": 350, "rate": 0.109}, {"rate": 0.147}],
            [{"max": 150, "rate": 0.183}, {"max": 350, "rate": 0.251}, {"rate": 0.339, "adj": -0.004}],
        ],
        "energyweekdayschedule": [list(EVENING_PEAK) for _ in range(12)],
        "energyweekendschedule": OFF_PEAK_WEEKENDS,
    },
    "d_tou_and_flat_demand": {
        "name": "time of use with time-of-use and monthly demand charges",
        "energyratestructure": [[{"rate": 0.071}], [{"rate": 0.125}], [{"rate": 0.104}]],
        # 0 off-peak all year; 1 summer peak 14-20; 2 winter peak 17-21; the same periods for demand.
        "energyweekdayschedule": _rows([0] * 14 + [1] * 6 + [0] * 4, [0] * 17 + [2] * 4 + [0] * 3),
        "energyweekendschedule": OFF_PEAK_WEEKENDS,
        "demandratestructure": [[{"rate": 0}], [{"rate": 11.37}], [{"rate": 6.25, "adj": 0.4}]],
        "demandweekdayschedule": _rows([0] * 14 + [1] * 6 + [0] * 4, [0] * 17 + [2] * 4 + [0] * 3),
        "demandweekendschedule": OFF_PEAK_WEEKENDS,
        "flatdemandstructure": [[{"rate": 3.85}]],
        "flatdemandmonths": [0] * 12,
        "demandwindow": 60,
        "fixedchargefirstmeter": 20,
        "fixedchargeunits": "$/month",
    },
    "e_net_billing_export": {
        "name": "time of use with net billing of exports",
        "energyratestructure": [[{"rate": 0.121, "sell": 0.0415}], [{"rate": 0.297, "sell": 0.0415}]],
        "energyweekdayschedule": [list(EVENING_PEAK) for _ in range(12)],
        "energyweekendschedule": OFF_PEAK_WEEKENDS,
        "dgrules": "Net Billing Instantaneous",
        "fixedchargefirstmeter": 12,
        "fixedchargeunits": "$/month",
    },
}
SOLAR_CASES = {"e_net_billing_export"}


# --- the two sides -----------------------------------------------------------------------------------------------


def openami_bills(
    record: dict[str, Any], load_wh: NDArray[np.int64], solar_wh: NDArray[np.int64]
) -> list[Bill]:
    tariff = parse_urdb(json.loads(json.dumps(record)), "case")
    starts = utc_seconds(datetime(YEAR, 1, 1, tzinfo=UTC)) + 3600 * np.arange(HOURS, dtype=np.int64)
    imported = np.maximum(load_wh - solar_wh, 0) * 1000  # mWh
    exported = np.maximum(solar_wh - load_wh, 0) * 1000
    return bill_periods(tariff, Load(starts, imported, 3600, exported), month_spans(YEAR))


def sam_outputs(
    record: dict[str, Any], load_wh: NDArray[np.int64], solar_wh: NDArray[np.int64]
) -> dict[str, Any]:
    model = Utilityrate5.new()
    # A JSON copy: the converter edits the schedules in place, and the record's rows may share lists.
    model.ElectricityRates.assign(URDBv8_to_ElectricityRates(json.loads(json.dumps(record))))
    model.ElectricityRates.rate_escalation = [0]
    model.Lifetime.analysis_period = 1
    model.Lifetime.inflation_rate = 0
    model.Lifetime.system_use_lifetime_output = 0
    model.Load.load = [float(wh) / 1000 for wh in load_wh]  # kW, one hour each
    model.Load.load_escalation = [0]
    model.SystemOutput.gen = [float(wh) / 1000 for wh in solar_wh]
    model.SystemOutput.degradation = [0]
    model.execute(0)
    outputs: dict[str, Any] = model.Outputs.export()
    return outputs


def _decimal(value: float) -> Decimal:
    return Decimal(f"{value:.6f}")  # SAM's float32 and float64 noise lies well below a micro-dollar


def sam_lines(record: dict[str, Any], outputs: dict[str, Any], month: int) -> list[Decimal]:
    """SAM's bill for `month` (0-based) split into the lines openami writes, unrounded."""
    lines: list[Decimal] = []
    prices = [
        [tier["rate"] + tier.get("adj", 0) for tier in period] for period in record["energyratestructure"]
    ]
    energy = np.array(outputs[f"energy_w_sys_ec_{MONTHS[month]}_tp"])  # kWh: periods x tiers, with headers
    for row in energy[1:-1]:
        period = int(row[0]) - 1
        lines += [_decimal(kwh * prices[period][t]) for t, kwh in enumerate(row[1:-1]) if kwh]
    lines.append(_decimal(outputs["charge_w_sys_fixed_ym"][1][month]))
    if "monthly_tou_demand_charge_w_sys" in outputs:
        lines += [
            _decimal(charge) for charge in outputs["monthly_tou_demand_charge_w_sys"][month + 1] if charge
        ]
        lines.append(_decimal(outputs["charge_w_sys_dc_fixed_ym"][1][month]))
    lines.append(-_decimal(outputs["net_billing_credits_ym"][1][month]))
    return lines


def _round(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


@pytest.fixture(scope="module")
def load_wh() -> NDArray[np.int64]:
    return household_wh()


@pytest.mark.parametrize("case", sorted(CASES))
def test_monthly_totals_agree_with_sam(case: str, load_wh: NDArray[np.int64]) -> None:
    record = CASES[case]
    solar_wh = rooftop_solar_wh() if case in SOLAR_CASES else np.zeros(HOURS, dtype=np.int64)
    bills = openami_bills(record, load_wh, solar_wh)
    outputs = sam_outputs(record, load_wh, solar_wh)
    sam_bill = outputs["utility_bill_w_sys_ym"][1]  # row 0 is "year 0", before the system
    for month, bill in enumerate(bills):
        lines = sam_lines(record, outputs, month)
        # The split is SAM's bill: nothing SAM charged is left out of the comparison.
        assert abs(sum(lines, Decimal(0)) - _decimal(sam_bill[month])) <= Decimal("0.00001"), (case, month)
        aligned = sum((_round(line) for line in lines), Decimal(0))
        assert abs(bill.total() - aligned) <= CENT, (
            f"{case}, {MONTHS[month]}: openami {bill.total()} vs SAM {aligned} (unrounded {sam_bill[month]:.5f})"
        )


def test_the_cases_exercise_what_they_claim(load_wh: NDArray[np.int64]) -> None:
    """Guards against a cross-check that passes vacuously: every tier reached in every month, both seasons'
    periods used, both demand charges billed, and export credited every month below the energy charges."""
    no_solar = np.zeros(HOURS, dtype=np.int64)
    for bill in openami_bills(CASES["c_tou_inclining_tiers"], load_wh, no_solar):
        assert {line.tier for line in bill.lines if line.component is Component.ENERGY} == {1, 2, 3}
    seasonal = openami_bills(CASES["b_tou_two_seasons"], load_wh, no_solar)
    assert {line.period for line in seasonal[0].lines if line.period} == {
        "jan-may_oct-dec/p0",
        "jan-may_oct-dec/p1",
    }
    assert {line.period for line in seasonal[6].lines if line.period} == {"jun-sep/p2", "jun-sep/p3"}
    for bill in openami_bills(CASES["d_tou_and_flat_demand"], load_wh, no_solar):
        assert len([line for line in bill.lines if line.component is Component.DEMAND]) == 2
    for bill in openami_bills(CASES["e_net_billing_export"], load_wh, rooftop_solar_wh()):
        assert Decimal(0) < -bill.total(Component.EXPORT) < bill.total(Component.ENERGY)
