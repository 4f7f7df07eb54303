"""Real published tariffs (tests/fixtures/tariffs/*.yaml) priced on loads simple enough to bill by hand.

Each fixture names its source (utility, schedule, page, effective date) in its `source` field and in the comment
at its top, and says there what the native format cannot express. Every bill here is computed twice, through
`bill_periods` on a `Load` built in Python and through `openami tariff bill --json` on a CSV file, and both are
compared with figures worked out in the comments: kWh per period x price, rounded half up once per line.
The property tests at the end check what must hold for any load: billing in two spans equals billing whole where
the tariff allows it, and a load of zeros costs only the fixed and minimum charges (and the taxes on them).
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.typing import NDArray
from typer.testing import CliRunner

from openami.cli.main import app
from openami.tariffs.calendar import utc_seconds
from openami.tariffs.model import Component, Tariff
from openami.tariffs.native import load_tariff, parse_tariff
from openami.tariffs.pricing import Bill, Load, bill_periods, month_spans

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "tariffs"
KWH = 1_000_000  # mWh per kWh
CENT = Decimal("0.01")

PSEG = "pseg_li_rate_194"
ZHEJIANG = "zhejiang_residential_tou_yearly_tiers"
JERSEY_E7 = "jersey_electricity_economy7"
AHEC_DEMAND = "ahec_rate45_three_phase_demand"
AHEC_MINIMUM = "ahec_rate03_three_phase_minimum"
GB_EXPORT = "gb_price_cap_2024_octopus_outgoing_fixed"
ALL_FIXTURES = (PSEG, ZHEJIANG, JERSEY_E7, AHEC_DEMAND, AHEC_MINIMUM, GB_EXPORT)
YEAR = {GB_EXPORT: 2024}  # the year each fixture is in force for; 2026 for the rest

Line = tuple[str, str, str]  # description, quantity, amount


def fixture(name: str) -> Tariff:
    return load_tariff(FIXTURES / f"{name}.yaml")


def year_of(name: str) -> int:
    return YEAR.get(name, 2026)


def steps_from(zone: str, first: date, end: date, step_s: int) -> NDArray[np.int64]:
    """UTC starts of `step_s` intervals from local midnight of `first` to local midnight of `end`."""
    a = utc_seconds(datetime(first.year, first.month, first.day, tzinfo=ZoneInfo(zone)))
    b = utc_seconds(datetime(end.year, end.month, end.day, tzinfo=ZoneInfo(zone)))
    return a + step_s * np.arange((b - a) // step_s, dtype=np.int64)


def constant_year(zone: str, year: int, kwh: str = "1") -> Load:
    """`kwh` every hour of `year`, as `openami tariff bill` reads a CSV of 8760 rows: from local midnight."""
    starts = steps_from(zone, date(year, 1, 1), date(year + 1, 1, 1), 3600)
    return Load(starts, np.full(len(starts), int(Decimal(kwh) * KWH), dtype=np.int64), 3600)


def bill_lines(bill: Bill) -> list[Line]:
    return [(line.description, str(line.quantity), str(line.amount)) for line in bill.lines]


def same_lines(actual: list[Line], expected: list[Line]) -> bool:
    """Equal descriptions, and quantities and amounts equal as numbers (80 == 80.000000)."""
    return len(actual) == len(expected) and all(
        a[0] == e[0] and Decimal(a[1]) == Decimal(e[1]) and Decimal(a[2]) == Decimal(e[2])
        for a, e in zip(actual, expected, strict=True)
    )


def cli_bill(tmp_path: Path, tariff: str, rows: list[str], year: int, *extra: str) -> dict[str, Any]:
    """`openami tariff bill --json` on a CSV of `rows` (the first is the header)."""
    csv = tmp_path / f"{tariff}-{year}.csv"
    csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    args = ["tariff", "bill", "--tariff", str(FIXTURES / f"{tariff}.yaml"), "--load", str(csv)]
    args += ["--year", str(year), "--json", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def json_lines(month: dict[str, Any]) -> list[Line]:
    return [(line["description"], str(line["quantity"]), str(line["amount"])) for line in month["lines"]]


def by_month(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["month"]: m for m in out["months"]}


def check_months(bills: list[Bill], out: dict[str, Any], expected: dict[str, tuple[list[Line], str]]) -> None:
    """Both paths give the hand-worked lines and total of each month in `expected`."""
    months = by_month(out)
    assert expected.keys() <= months.keys() == {f"{b.start:%Y-%m}" for b in bills}
    for bill in bills:
        key = f"{bill.start:%Y-%m}"
        if key not in expected:
            continue
        lines, total = expected[key]
        assert same_lines(bill_lines(bill), lines), (key, bill_lines(bill))
        assert bill.total() == Decimal(total), key
        assert same_lines(json_lines(months[key]), lines), (key, months[key]["lines"])
        assert Decimal(str(months[key]["total"])) == Decimal(total), key
    annual = sum((b.total() for b in bills), Decimal(0))
    assert Decimal(str(out["annual_total"])) == annual


def quantities(bills: list[Bill]) -> dict[tuple[str, str | None, int | None], Decimal]:
    sums: dict[tuple[str, str | None, int | None], Decimal] = defaultdict(Decimal)
    for bill in bills:
        for line in bill.lines:
            sums[line.component.value, line.period, line.tier] += line.quantity
    return dict(sums)


# --- PSEG Long Island Rate 194: time of use, seasons, US federal holidays ----------------------------------

# 1 kWh every hour of 2026 (America/New_York). Peak is 15:00-19:00 on weekdays that are not federal holidays
# (observed days included): 4 kWh per such day; every other hour is off-peak. Service charge 0.56 $/day.
# - January: 22 weekdays, less New Year's Day (Thu 1) and Martin Luther King Jr. Day (Mon 19) -> 20 days,
#   80 kWh peak x 0.1885 = 15.08; 744 - 80 = 664 kWh off-peak x 0.0929 = 61.6856 -> 61.69;
#   31 days x 0.56 = 17.36; total 94.13.
# - March: clocks go forward on Sun 8 March, so 743 hours; 22 weekdays, no holiday -> 88 kWh x 0.1885 = 16.588
#   -> 16.59; 655 kWh x 0.0929 = 60.8495 -> 60.85; 17.36; total 94.80.
# - July (summer prices): 23 weekdays, less Independence Day observed on Fri 3 July (4 July is a Saturday)
#   -> 22 days, 88 kWh x 0.2217 = 19.5096 -> 19.51; 656 kWh x 0.1093 = 71.7008 -> 71.70; 17.36; total 108.57.
# - November: clocks go back on Sun 1 November, so 721 hours; 21 weekdays less Veterans Day (Wed 11) and
#   Thanksgiving (Thu 26) -> 19 days, 76 kWh x 0.1885 = 14.326 -> 14.33; 645 kWh x 0.0929 = 59.9205 -> 59.92;
#   30 x 0.56 = 16.80; total 91.05.
PSEG_2026 = {
    "2026-01": ([("energy winter/peak", "80", "15.08"), ("energy winter/off_peak", "664", "61.69"),
                 ("fixed charge per day", "31", "17.36")], "94.13"),
    "2026-03": ([("energy winter/peak", "88", "16.59"), ("energy winter/off_peak", "655", "60.85"),
                 ("fixed charge per day", "31", "17.36")], "94.80"),
    "2026-07": ([("energy summer/peak", "88", "19.51"), ("energy summer/off_peak", "656", "71.70"),
                 ("fixed charge per day", "31", "17.36")], "108.57"),
    "2026-11": ([("energy winter/peak", "76", "14.33"), ("energy winter/off_peak", "645", "59.92"),
                 ("fixed charge per day", "30", "16.80")], "91.05"),
}  # fmt: skip


def test_pseg_rate_194_peak_is_weekday_afternoons_except_federal_holidays(tmp_path: Path) -> None:
    tariff = fixture(PSEG)
    bills = bill_periods(tariff, constant_year(tariff.timezone, 2026), month_spans(2026))
    out = cli_bill(tmp_path, PSEG, ["kwh"] + ["1"] * 8760, 2026)
    check_months(bills, out, PSEG_2026)
    # The year: 261 weekdays less 11 weekday holidays (Jul 4 falls on a Saturday) = 250 peak days = 1000 kWh.
    # Summer peak days: June 22 - 1 (Juneteenth), July 22, August 21, September 22 - 1 (Labor Day) = 85 -> 340.
    # Summer hours: 122 days x 24 = 2928, so 2588 off-peak; winter peak 660; winter off-peak 8760 - 3588 = 5172.
    assert {k: v for k, v in quantities(bills).items() if k[0] == "energy"} == {
        ("energy", "winter/peak", None): 660, ("energy", "winter/off_peak", None): 5172,
        ("energy", "summer/peak", None): 340, ("energy", "summer/off_peak", None): 2588,
    }  # fmt: skip
    assert out["currency"] == "USD"
    assert out["year"] == 2026
    assert set(out["months"][0]) == {
        "month", "energy_kwh", "export_kwh", "energy_charge", "fixed_charge", "demand_charge",
        "minimum_charge", "export_credit", "taxes", "total", "lines",
    }  # fmt: skip
    january = out["months"][0]
    # energy_charge 15.08 + 61.69 = 76.77; fixed_charge 17.36; nothing else.
    assert (january["energy_kwh"], january["energy_charge"], january["fixed_charge"]) == (744, 76.77, 17.36)
    assert january["demand_charge"] == january["minimum_charge"] == january["taxes"] == 0


def test_pseg_a_holiday_is_off_peak_and_extra_holidays_come_from_the_file(tmp_path: Path) -> None:
    tariff = fixture(PSEG)
    load = constant_year(tariff.timezone, 2026)
    mlk, tuesday = bill_periods(
        tariff, load, [(date(2026, 1, 19), date(2026, 1, 20)), (date(2026, 1, 20), date(2026, 1, 21))]
    )
    # Monday 19 January 2026 is Martin Luther King Jr. Day: all 24 kWh off-peak, 24 x 0.0929 = 2.2296 -> 2.23.
    assert bill_lines(mlk)[0] == ("energy winter/off_peak", "24", "2.23")
    assert [line.period for line in mlk.lines if line.component is Component.ENERGY] == ["winter/off_peak"]
    # The next day is an ordinary Tuesday: 4 kWh at peak (0.754 -> 0.75), 20 off-peak (1.858 -> 1.86).
    assert bill_lines(tuesday)[:2] == [
        ("energy winter/peak", "4", "0.75"),
        ("energy winter/off_peak", "20", "1.86"),
    ]
    # December: 23 weekdays less Christmas (Fri 25) = 22 days, 88 kWh peak. A holidays file adding Thursday
    # 24 December (a day the utility might also declare) moves 4 kWh to off-peak: 84 peak, 744 - 84 = 660 off.
    holidays = tmp_path / "holidays.txt"
    holidays.write_text("# extra days off\n2026-12-24, Christmas Eve\n", encoding="utf-8")
    rows = ["kwh"] + ["1"] * 8760
    plain = by_month(cli_bill(tmp_path, PSEG, rows, 2026))["2026-12"]
    extra = by_month(cli_bill(tmp_path, PSEG, rows, 2026, "--holidays", str(holidays)))["2026-12"]
    assert [line["quantity"] for line in plain["lines"][:2]] == [88, 656]
    assert [line["quantity"] for line in extra["lines"][:2]] == [84, 660]
    # 4 kWh x (0.1885 - 0.0929) = 0.3824 less before rounding; line by line, peak 88 x 0.1885 = 16.588 -> 16.59
    # becomes 84 x 0.1885 = 15.834 -> 15.83, off-peak 656 x 0.0929 = 60.9424 -> 60.94 becomes 660 x 0.0929 =
    # 61.314 -> 61.31: 77.53 - 77.14 = 0.39 less.
    assert Decimal(str(plain["total"])) - Decimal(str(extra["total"])) == Decimal("0.39")


# --- Zhejiang residential: peak/valley with yearly tiers -------------------------------------------------

# 1 kWh every hour of 2026 (Asia/Shanghai, no daylight saving): 14 kWh peak (08:00-22:00) and 10 kWh valley a
# day. Tiers count the year's kWh from 1 January: tier 1 to 2760 kWh = 115 days (1 Jan - 25 Apr), tier 2 to
# 4800 kWh = 85 more days (26 Apr - 19 Jul), tier 3 from 20 July.
# - January, all tier 1: 434 peak x 0.568 = 246.512 -> 246.51; 310 valley x 0.288 = 89.28; total 335.79.
# - April: 1-25 in tier 1 (350 peak -> 198.80; 250 valley -> 72.00), 26-30 in tier 2 (70 peak x 0.618 = 43.26;
#   50 valley x 0.338 = 16.90); total 330.96.
# - July: 1-19 in tier 2 (266 peak x 0.618 = 164.388 -> 164.39; 190 valley x 0.338 = 64.22), 20-31 in tier 3
#   (168 peak x 0.868 = 145.824 -> 145.82; 120 valley x 0.588 = 70.56); total 444.99.
# - December, all tier 3: 434 x 0.868 = 376.712 -> 376.71; 310 x 0.588 = 182.28; total 558.99.
P, V = "energy all_year/peak", "energy all_year/valley"
ZHEJIANG_2026 = {
    "2026-01": ([(f"{P}, tier 1", "434", "246.51"), (f"{V}, tier 1", "310", "89.28")], "335.79"),
    "2026-04": ([(f"{P}, tier 1", "350", "198.80"), (f"{V}, tier 1", "250", "72.00"),
                 (f"{P}, tier 2", "70", "43.26"), (f"{V}, tier 2", "50", "16.90")], "330.96"),
    "2026-07": ([(f"{P}, tier 2", "266", "164.39"), (f"{V}, tier 2", "190", "64.22"),
                 (f"{P}, tier 3", "168", "145.82"), (f"{V}, tier 3", "120", "70.56")], "444.99"),
    "2026-12": ([(f"{P}, tier 3", "434", "376.71"), (f"{V}, tier 3", "310", "182.28")], "558.99"),
}  # fmt: skip


def test_zhejiang_yearly_tiers_fill_peak_and_valley_together(tmp_path: Path) -> None:
    tariff = fixture(ZHEJIANG)
    bills = bill_periods(tariff, constant_year(tariff.timezone, 2026), month_spans(2026))
    out = cli_bill(tmp_path, ZHEJIANG, ["kwh"] + ["1"] * 8760, 2026)
    check_months(bills, out, ZHEJIANG_2026)
    # The year by tier: 115 / 85 / 165 days of 14 peak and 10 valley kWh.
    peak, valley = "all_year/peak", "all_year/valley"
    assert quantities(bills) == {
        ("energy", peak, 1): 1610, ("energy", valley, 1): 1150,
        ("energy", peak, 2): 1190, ("energy", valley, 2): 850,
        ("energy", peak, 3): 2310, ("energy", valley, 3): 1650,
    }  # fmt: skip
    assert out["currency"] == "CNY"


def test_zhejiang_a_later_bill_starts_from_the_year_to_date() -> None:
    # July billed alone, told that 181 days x 24 = 4344 kWh were used since 1 January, is the July above.
    tariff = fixture(ZHEJIANG)
    july = bill_periods(
        tariff,
        constant_year(tariff.timezone, 2026),
        [(date(2026, 7, 1), date(2026, 8, 1))],
        year_to_date_mwh=4344 * KWH,
    )[0]
    assert same_lines(bill_lines(july), ZHEJIANG_2026["2026-07"][0])


# --- Jersey Electricity Economy 7: two rates, night hours, GST ---------------------------------------------

# 1 kWh every hour of 2026 (Europe/Jersey). Night 00:00-07:00 at 7.71p, day at 15.24p, 18.86p a day, then
# 5 % GST on all of it.
# - January: 217 night kWh x 0.0771 = 16.7307 -> 16.73; 527 day kWh x 0.1524 = 80.3148 -> 80.31;
#   31 x 0.1886 = 5.8466 -> 5.85; GST 5 % of 102.89 = 5.1445 -> 5.14; total 108.03. (At the page's prices with
#   GST, 217 x 8.10p + 527 x 16.00p + 31 x 19.80p = 108.035: the same within a penny.)
# - March: clocks go forward on Sun 29 March at 01:00, inside the night: 216 night kWh -> 16.6536 -> 16.65;
#   80.31; 5.85; GST 5 % of 102.81 = 5.1405 -> 5.14; total 107.95.
# - October: clocks go back on Sun 25 October, 01:00-02:00 happens twice: 218 night kWh -> 16.8078 -> 16.81;
#   80.31; 5.85; GST 5 % of 102.97 = 5.1485 -> 5.15; total 108.12.
JERSEY_2026 = {
    "2026-01": ([("energy all_year/day", "527", "80.31"), ("energy all_year/night", "217", "16.73"),
                 ("fixed charge per day", "31", "5.85"), ("GST", "102.89", "5.14")], "108.03"),
    "2026-03": ([("energy all_year/day", "527", "80.31"), ("energy all_year/night", "216", "16.65"),
                 ("fixed charge per day", "31", "5.85"), ("GST", "102.81", "5.14")], "107.95"),
    "2026-10": ([("energy all_year/day", "527", "80.31"), ("energy all_year/night", "218", "16.81"),
                 ("fixed charge per day", "31", "5.85"), ("GST", "102.97", "5.15")], "108.12"),
}  # fmt: skip


def test_jersey_economy7_night_follows_the_local_clock_and_gst_is_added(tmp_path: Path) -> None:
    tariff = fixture(JERSEY_E7)
    bills = bill_periods(tariff, constant_year(tariff.timezone, 2026), month_spans(2026))
    out = cli_bill(tmp_path, JERSEY_E7, ["kwh"] + ["1"] * 8760, 2026)
    check_months(bills, out, JERSEY_2026)
    assert by_month(out)["2026-01"]["taxes"] == 5.14
    assert out["currency"] == "GBP"


# --- AHEC Rate 45: a demand charge on the highest 15-minute mean --------------------------------------------


def demand_rows() -> list[str]:
    """A year of 15-minute kWh: 2.5 (10 kW) throughout, and 12.5 (50 kW) at 14:00 local on each 15th."""
    zone = ZoneInfo("America/Chicago")
    starts = steps_from("America/Chicago", date(2026, 1, 1), date(2027, 1, 1), 900)
    rows = ["kwh"]
    for s in starts:
        local = datetime.fromtimestamp(int(s), UTC).astimezone(zone)
        rows.append("12.5" if (local.day, local.hour, local.minute) == (15, 14, 0) else "2.5")
    return rows


# - January: 2976 intervals, 2975 x 2.5 + 12.5 = 7450 kWh x 0.0807 = 601.215 -> 601.22; service availability
#   80.00; demand 50 kW x 10.00 = 500.00; total 1181.22.
# - February: 2688 intervals, 6730 kWh x 0.0807 = 543.111 -> 543.11; 80.00; 500.00; total 1123.11.
# - March: clocks go forward on Sun 8 March, 2972 intervals, 7440 kWh x 0.0807 = 600.408 -> 600.41; total 1180.41.
AHEC_2026 = {
    "2026-01": ([("energy all_year/all_hours", "7450", "601.22"), ("fixed charge per month", "1", "80.00"),
                 ("demand, highest 15-min mean", "50", "500.00")], "1181.22"),
    "2026-02": ([("energy all_year/all_hours", "6730", "543.11"), ("fixed charge per month", "1", "80.00"),
                 ("demand, highest 15-min mean", "50", "500.00")], "1123.11"),
    "2026-03": ([("energy all_year/all_hours", "7440", "600.41"), ("fixed charge per month", "1", "80.00"),
                 ("demand, highest 15-min mean", "50", "500.00")], "1180.41"),
}  # fmt: skip


def test_ahec_demand_charge_is_on_the_highest_15_minute_mean(tmp_path: Path) -> None:
    tariff = fixture(AHEC_DEMAND)
    rows = demand_rows()
    starts = steps_from(tariff.timezone, date(2026, 1, 1), date(2027, 1, 1), 900)
    mwh = np.array([int(Decimal(r) * KWH) for r in rows[1:]], dtype=np.int64)
    bills = bill_periods(tariff, Load(starts, mwh, 900), month_spans(2026))
    out = cli_bill(tmp_path, AHEC_DEMAND, rows, 2026)
    check_months(bills, out, AHEC_2026)
    assert by_month(out)["2026-01"]["demand_charge"] == 500


def test_ahec_demand_windows_are_clock_aligned_quarter_hours() -> None:
    # 5-minute data, nothing but 60 kW from 14:10 to 14:25 on 15 January (5 kWh per 5 minutes, 15 kWh).
    # Windows are clock-aligned: 14:00-14:15 holds 5 kWh (mean 20 kW), 14:15-14:30 holds 10 kWh (40 kW), so the
    # billing demand is 40 kW -> 400.00; a rolling window would find 60 kW. The rate's "15 minutes of greatest
    # power use" does not say which; block intervals are what demand registers commonly record.
    # Energy 15 kWh x 0.0807 = 1.2105 -> 1.21; total 80.00 + 400.00 + 1.21 = 481.21.
    tariff = fixture(AHEC_DEMAND)
    starts = steps_from(tariff.timezone, date(2026, 1, 1), date(2026, 2, 1), 300)
    burst = utc_seconds(datetime(2026, 1, 15, 14, 10, tzinfo=ZoneInfo(tariff.timezone)))
    mwh = np.where((starts >= burst) & (starts < burst + 900), 5 * KWH, 0).astype(np.int64)
    bill = bill_periods(tariff, Load(starts, mwh, 300), [(date(2026, 1, 1), date(2026, 2, 1))])[0]
    assert bill_lines(bill) == [
        ("energy all_year/all_hours", "15", "1.21"),
        ("fixed charge per month", "1", "80.00"),
        ("demand, highest 15-min mean", "40.0", "400.00"),
    ]
    assert bill.total() == Decimal("481.21")


def test_ahec_rate03_minimum_tops_up_a_small_month() -> None:
    # 10 kWh in January: 10 x 0.1210 = 1.21, topped up to the 39.50 minimum by a 38.29 shortfall line.
    # 400 kWh: 400 x 0.1210 = 48.40, above the minimum, so no minimum line.
    tariff = fixture(AHEC_MINIMUM)
    starts = steps_from(tariff.timezone, date(2026, 1, 1), date(2026, 2, 1), 3600)
    for kwh, lines in (
        (10, [("energy all_year/all_hours", "10", "1.21"), ("minimum charge: shortfall", "1", "38.29")]),
        (400, [("energy all_year/all_hours", "400", "48.40")]),
    ):
        mwh = np.zeros(len(starts), dtype=np.int64)
        mwh[:kwh] = KWH
        bill = bill_periods(tariff, Load(starts, mwh, 3600), [(date(2026, 1, 1), date(2026, 2, 1))])[0]
        assert bill_lines(bill) == lines


# --- GB price cap 2024 with Smart Export Guarantee: export credits and quarterly versions -------------------


def export_rows() -> list[str]:
    """Every UTC hour of 2024: 0.5 kWh imported; 1 kWh exported in the hours starting 10:00-13:00 UTC."""
    first = datetime(2024, 1, 1, tzinfo=UTC)
    rows = ["timestamp,kwh,export_kwh"]
    for h in range(8784):
        t = first + timedelta(hours=h)
        rows.append(f"{t.isoformat()},0.5,{1 if 10 <= t.hour < 14 else 0}")
    return rows


# Import = hours of the local month / 2; export = 4 kWh a day credited at 0.15; standing charge per day.
# Europe/London is UTC in winter, so the UTC year 2024 is the local year; the export hours are 10:00-14:00 GMT
# or 11:00-15:00 BST, always inside the local day.
# - January: 372 kWh x 0.2862 = 106.4664 -> 106.47; 124 kWh x -0.15 = -18.60; 31 x 0.5335 = 16.5385 -> 16.54;
#   total 104.41.
# - February (29 days, 2024 is a leap year): 348 x 0.2862 = 99.5976 -> 99.60; 116 x -0.15 = -17.40;
#   29 x 0.5335 = 15.4715 -> 15.47; total 97.67.
# - March: BST starts Sun 31 March, so the local month has 743 hours: 371.5 x 0.2862 = 106.3233 -> 106.32;
#   -18.60; 16.54; total 104.26.
# - April (second version): 360 x 0.2450 = 88.20; -18.00; 30 x 0.6010 = 18.03; total 88.23.
# - July (third version): 372 x 0.2236 = 83.1792 -> 83.18; -18.60; 31 x 0.6012 = 18.6372 -> 18.64; total 83.22.
# - October (fourth version): BST ends Sun 27 October, 745 hours: 372.5 x 0.2450 = 91.2625 -> 91.26; -18.60;
#   31 x 0.6099 = 18.9069 -> 18.91; total 91.57.
# The other months the same way: May 91.17, June 88.23, August 83.22, September 80.54, November 88.50,
# December 91.45; the year 1092.47.
E, X, F = "energy all_year/all_hours", "export credit", "fixed charge per day"
GB_2024 = {
    "2024-01": ([(E, "372", "106.47"), (X, "124", "-18.60"), (F, "31", "16.54")], "104.41"),
    "2024-02": ([(E, "348", "99.60"), (X, "116", "-17.40"), (F, "29", "15.47")], "97.67"),
    "2024-03": ([(E, "371.5", "106.32"), (X, "124", "-18.60"), (F, "31", "16.54")], "104.26"),
    "2024-04": ([(E, "360", "88.20"), (X, "120", "-18.00"), (F, "30", "18.03")], "88.23"),
    "2024-07": ([(E, "372", "83.18"), (X, "124", "-18.60"), (F, "31", "18.64")], "83.22"),
    "2024-10": ([(E, "372.5", "91.26"), (X, "124", "-18.60"), (F, "31", "18.91")], "91.57"),
}
GB_2024_OTHER_TOTALS = {"2024-05": "91.17", "2024-06": "88.23", "2024-08": "83.22", "2024-09": "80.54",
                        "2024-11": "88.50", "2024-12": "91.45"}  # fmt: skip


def test_gb_export_is_credited_at_the_seg_rate_under_each_quarters_cap(tmp_path: Path) -> None:
    tariff = fixture(GB_EXPORT)
    rows = export_rows()
    starts = np.array(
        [utc_seconds(datetime.fromisoformat(r.split(",")[0])) for r in rows[1:]], dtype=np.int64
    )
    exported = np.array([int(r.split(",")[2]) * KWH for r in rows[1:]], dtype=np.int64)
    load = Load(starts, np.full(len(starts), KWH // 2, dtype=np.int64), 3600, exported)
    bills = bill_periods(tariff, load, month_spans(2024))
    out = cli_bill(tmp_path, GB_EXPORT, rows, 2024)
    check_months(bills, out, GB_2024)
    months = by_month(out)
    for month, total in GB_2024_OTHER_TOTALS.items():
        assert Decimal(str(months[month]["total"])) == Decimal(total), month
    assert Decimal(str(out["annual_total"])) == Decimal("1092.47")
    assert (months["2024-01"]["export_kwh"], months["2024-01"]["export_credit"]) == (124, -18.6)


# --- properties ---------------------------------------------------------------------------------------------


def month_bounds(year: int, month: int) -> tuple[date, date]:
    return date(year, month, 1), date(year + (month == 12), month % 12 + 1, 1)


def sums_by_line(bills: list[Bill]) -> tuple[dict[tuple[str, str], Decimal], dict[tuple[str, str], int]]:
    amounts: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for bill in bills:
        for line in bill.lines:
            amounts[line.component.value, line.description] += line.amount
            counts[line.component.value, line.description] += 1
    return amounts, counts


def assert_split_equals_whole(split: list[Bill], whole: Bill) -> None:
    """Line by line, the split bills sum to the whole within one minor unit per line of the split."""
    parts, counts = sums_by_line(split)
    single, _ = sums_by_line([whole])
    for key in parts.keys() | single.keys():  # a line of a few mWh may be missing from one side
        difference = abs(parts.get(key, Decimal(0)) - single.get(key, Decimal(0)))
        assert difference <= CENT * max(counts[key], 1), key
    assert abs(sum((b.total() for b in split), Decimal(0)) - whole.total()) <= CENT * sum(counts.values())
    assert sum((b.import_kwh for b in split), Decimal(0)) == whole.import_kwh
    assert sum((b.export_kwh for b in split), Decimal(0)) == whole.export_kwh


# Without tiers, demand or a minimum, every charge is a sum over intervals or days, so a bill split in two adds
# up to the whole. (A demand charge is on each bill's own peak, a minimum on each bill's own total, so tariffs
# with those are left out on purpose.)
ADDITIVE = (PSEG, JERSEY_E7, GB_EXPORT)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(ADDITIVE), month=st.integers(1, 12), data=st.data())
def test_billing_in_two_spans_equals_billing_whole(name: str, month: int, data: st.DataObject) -> None:
    tariff = fixture(name)
    first, end = month_bounds(year_of(name), month)
    starts = steps_from(tariff.timezone, first, end, 3600)
    imported = data.draw(arrays(np.int64, len(starts), elements=st.integers(0, 5 * KWH), fill=st.nothing()))
    exported = data.draw(arrays(np.int64, len(starts), elements=st.integers(0, 3 * KWH), fill=st.nothing()))
    load = Load(starts, imported, 3600, exported)
    cut = first + timedelta(days=data.draw(st.integers(1, (end - first).days - 1)))
    whole = bill_periods(tariff, load, [(first, end)])[0]
    assert_split_equals_whole(bill_periods(tariff, load, [(first, cut), (cut, end)]), whole)


def billing_cycle_variant() -> Tariff:
    """Zhejiang's peak/valley prices with tiers on each bill's own consumption, prorated by days: 230 and 400 kWh
    a month (2760 and 4800 a year, over 12), pro rata. Not a published tariff: the fixtures have no billing-cycle
    tiers, and this keeps real prices and hours while changing only the tier basis."""
    data = yaml.safe_load((FIXTURES / f"{ZHEJIANG}.yaml").read_text(encoding="utf-8"))
    data["tiers"] = {"bounds_kwh": [230, 400], "basis": "billing_cycle", "allocation": "pro_rata"}
    return parse_tariff(data, "zhejiang billing-cycle variant")


@settings(max_examples=40, deadline=None)
@given(
    month=st.integers(1, 12),
    day=arrays(np.int64, 24, elements=st.integers(0, 2 * KWH), fill=st.nothing()),
    data=st.data(),
)
def test_billing_cycle_tiers_split_like_the_whole_when_days_are_alike(
    month: int, day: NDArray[np.int64], data: st.DataObject
) -> None:
    # Billing-cycle tier bounds are prorated by days, so a split bill equals the whole when each day uses the
    # same energy at the same hours (with uneven days, a busy first half rightly reaches higher tiers). Any day
    # profile, any month, any cut.
    tariff = billing_cycle_variant()
    first, end = month_bounds(2026, month)
    starts = steps_from(tariff.timezone, first, end, 3600)  # Asia/Shanghai: every day has 24 hours
    load = Load(starts, np.tile(day, len(starts) // 24), 3600)
    cut = first + timedelta(days=data.draw(st.integers(1, (end - first).days - 1)))
    whole = bill_periods(tariff, load, [(first, end)])[0]
    assert_split_equals_whole(bill_periods(tariff, load, [(first, cut), (cut, end)]), whole)


@settings(max_examples=40, deadline=None)
@given(
    before_kwh=st.integers(0, 6000),
    hours=arrays(np.int64, 744, elements=st.integers(KWH, 12 * KWH), fill=st.nothing()),
    cut_day=st.integers(2, 31),
)
def test_yearly_tiers_split_across_calls_carry_the_year_to_date(
    before_kwh: int, hours: NDArray[np.int64], cut_day: int
) -> None:
    # Zhejiang, a January after `before_kwh` kWh of the year: billed whole, or as two bills in separate calls,
    # the second told the year to date, the kWh in each tier and period are the same. 1 to 12 kWh an hour makes
    # a month of 744 to 8928 kWh, so the month crosses the 2760 and 4800 kWh bounds in many examples.
    tariff = fixture(ZHEJIANG)
    first, end = month_bounds(2026, 1)
    starts = steps_from(tariff.timezone, first, end, 3600)
    load = Load(starts, hours, 3600)
    cut = date(2026, 1, cut_day)
    before = before_kwh * KWH
    whole = bill_periods(tariff, load, [(first, end)], year_to_date_mwh=before)[0]
    head = bill_periods(tariff, load, [(first, cut)], year_to_date_mwh=before)[0]
    used = int(hours[: (cut_day - 1) * 24].sum())
    tail = bill_periods(tariff, load, [(cut, end)], year_to_date_mwh=before + used)[0]
    assert quantities([head, tail]) == quantities([whole])
    assert_split_equals_whole([head, tail], whole)


def cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(ALL_FIXTURES), month=st.integers(1, 12), data=st.data())
def test_a_load_of_zeros_costs_only_the_fixed_and_minimum_charges(
    name: str, month: int, data: st.DataObject
) -> None:
    tariff = fixture(name)
    first, end = month_bounds(year_of(name), month)
    days_in_month = (end - first).days
    a = data.draw(st.integers(0, days_in_month - 1))
    b = data.draw(st.integers(a + 1, days_in_month))
    span = (first + timedelta(days=a), first + timedelta(days=b))
    starts = steps_from(tariff.timezone, first, end, 900)
    zeros = np.zeros(len(starts), dtype=np.int64)
    bill = bill_periods(tariff, Load(starts, zeros, 900, zeros), [span])[0]
    version = tariff.version_on(span[0])
    assert version is not None
    days = Decimal(b - a)
    # By hand: the fixed charges per day x days and per month x days / days in the month, each rounded once;
    # the minimum, prorated the same way, all short; a tax on those of them it names.
    fixed = cents(version.fixed_per_day * days) if version.fixed_per_day else Decimal(0)
    if version.fixed_per_month:
        fixed += cents(version.fixed_per_month * days / days_in_month)
    minimum = cents(version.minimum_per_month * days / days_in_month)
    taxes = sum(
        (
            cents(tax.rate * ((fixed if Component.FIXED in tax.applies_to else 0)
                              + (minimum if Component.MINIMUM in tax.applies_to else 0)))
            for tax in version.taxes
        ),
        Decimal(0),
    )  # fmt: skip
    assert bill.total(Component.ENERGY, Component.DYNAMIC, Component.DEMAND, Component.EXPORT) == 0
    assert bill.total(Component.FIXED) == fixed
    assert bill.total(Component.MINIMUM) == minimum
    assert bill.total(Component.TAX) == taxes
    assert bill.total() == fixed + minimum + taxes


def test_monthly_tiers_count_the_calendar_months_consumption() -> None:
    # Zhejiang's prices with monthly tiers (230 / 400 kWh), chronological. 240 kWh on 1 January, nothing after.
    # January whole: 230 kWh in tier 1, 10 in tier 2. Billed as two bills in one call, 1-15 and 16-31, the
    # calendar month's first 230 kWh are still the 230 on the 1st, so tier 1 must again hold 230 kWh; the
    # pricing gives the first bill bounds of 230 x 15/31 = 111.29 kWh instead.
    data = yaml.safe_load((FIXTURES / f"{ZHEJIANG}.yaml").read_text(encoding="utf-8"))
    data["tiers"] = {"bounds_kwh": [230, 400], "basis": "monthly", "allocation": "chronological"}
    tariff = parse_tariff(data, "zhejiang monthly variant")
    first, end = month_bounds(2026, 1)
    starts = steps_from(tariff.timezone, first, end, 3600)
    hours = np.zeros(len(starts), dtype=np.int64)
    hours[:24] = 10 * KWH
    load = Load(starts, hours, 3600)
    whole = bill_periods(tariff, load, [(first, end)])
    split = bill_periods(tariff, load, [(first, date(2026, 1, 16)), (date(2026, 1, 16), end)])

    def tier_one(bills: list[Bill]) -> Decimal:
        return sum((q for (_c, _p, tier), q in quantities(bills).items() if tier == 1), Decimal(0))

    assert tier_one(whole) == 230
    assert tier_one(split) == 230
