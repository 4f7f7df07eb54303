"""Load CSV files (openami.tariffs.loads): what is read, and each refusal naming the file, row and column.

Rows are numbered as a spreadsheet shows them: the header is row 1, the first interval row 2.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from openami.cli.main import app
from openami.common.errors import ValidationError
from openami.tariffs.calendar import utc_seconds
from openami.tariffs.loads import read_load, read_prices

NEW_YORK = "America/New_York"
KWH = 1_000_000  # mWh


def csv_file(tmp_path: Path, *rows: str, name: str = "load.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


NEW_YEAR = datetime(2026, 1, 1, tzinfo=UTC)


def stamped(*values: str, step_h: float = 1) -> list[str]:
    """`timestamp,kwh` rows from 2026-01-01T00:00Z, one per value, `step_h` hours apart."""
    return [f"{(NEW_YEAR + timedelta(hours=step_h * n)).isoformat()},{v}" for n, v in enumerate(values)]


def refused(path: Path, year: int = 2026, zone: str = NEW_YORK) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        read_load(path, year, zone)
    return caught.value


# --- what is read ------------------------------------------------------------------------------------------------


def test_a_year_of_hourly_rows_starts_at_local_midnight_on_1_january(tmp_path: Path) -> None:
    load = read_load(csv_file(tmp_path, "kwh", *["0.25"] * 8760), 2026, NEW_YORK)
    # Midnight in New York on 1 January is 05:00 UTC; rows are hours after it; 0.25 kWh is 250 000 mWh.
    assert int(load.start_s[0]) == utc_seconds(datetime(2026, 1, 1, 5, tzinfo=UTC))
    assert (load.interval_s, len(load.start_s), int(load.import_mwh[0])) == (3600, 8760, 250_000)
    assert int(load.start_s[-1] - load.start_s[0]) == 8759 * 3600
    assert load.export_mwh is None


@pytest.mark.parametrize(
    ("rows", "year", "step"), [(8784, 2024, 3600), (17520, 2026, 1800), (35040, 2026, 900)]
)
def test_the_row_count_gives_the_interval_length(tmp_path: Path, rows: int, year: int, step: int) -> None:
    load = read_load(csv_file(tmp_path, "kwh", *["0"] * rows), year, "UTC")
    assert (load.interval_s, len(load.start_s)) == (step, rows)


def test_timestamps_give_the_starts_and_the_step_and_export_has_its_column(tmp_path: Path) -> None:
    rows = [f"{r},0.5" for r in stamped("1.5", "0", "0.001", step_h=0.25)]
    path = csv_file(tmp_path, " Timestamp , KWH ,export_kwh", *rows)  # names are trimmed, case ignored
    load = read_load(path, 2026, NEW_YORK)
    assert load.interval_s == 900
    assert [int(s) for s in load.start_s] == [
        utc_seconds(datetime(2026, 1, 1, tzinfo=UTC)) + 900 * n for n in range(3)
    ]
    assert [int(v) for v in load.import_mwh] == [1_500_000, 0, 1_000]
    assert load.export_mwh is not None
    assert [int(v) for v in load.export_mwh] == [500_000] * 3


def test_offsets_other_than_utc_are_converted(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "timestamp,kwh", "2026-07-01T00:00:00-04:00,1", "2026-07-01T01:00:00-04:00,1")
    load = read_load(path, 2026, NEW_YORK)
    assert int(load.start_s[0]) == utc_seconds(datetime(2026, 7, 1, 4, tzinfo=UTC))


# --- refusals ----------------------------------------------------------------------------------------------------


def test_a_missing_value_is_refused_at_its_row_and_column(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "timestamp,kwh", *stamped("1", "", "1"))
    error = refused(path)
    assert (error.location, error.message) == (
        f"{path}, row 3, column kwh", "missing value: every interval needs its energy")  # fmt: skip
    path = csv_file(tmp_path, "kwh,export_kwh", *["1,0"] * 4, "1,", *["1,0"] * 8755)
    assert refused(path).location == f"{path}, row 6, column export_kwh"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-0.5", "energy must be a finite number >= 0, got -0.5"),
        ("NaN", "energy must be a finite number >= 0, got NaN"),
        ("Infinity", "energy must be a finite number >= 0, got Infinity"),
        ("lots", "'lots' is not a number"),
    ],
)
def test_a_negative_or_not_a_number_value_is_refused_at_its_row(
    tmp_path: Path, value: str, message: str
) -> None:
    rows = ["1"] * 8760
    rows[41] = value  # row 43 of the file
    path = csv_file(tmp_path, "kwh", *rows)
    error = refused(path)
    assert (error.location, error.message) == (f"{path}, row 43, column kwh", message)


def test_a_row_with_more_fields_than_the_header_is_refused_at_its_row(tmp_path: Path) -> None:
    # A decimal comma ("1,5" for 1.5 kWh) is the usual way this happens.
    rows = ["1"] * 8760
    rows[41] = "1,5"
    path = csv_file(tmp_path, "kwh", *rows)
    assert refused(path).location.startswith(f"{path}, row 43")


@pytest.mark.parametrize(
    ("count", "year", "expected"),
    [(8759, 2026, 8760), (8761, 2026, 8760), (8784, 2026, 8760), (8760, 2024, 8784), (17500, 2026, 8760)],
)
def test_a_row_count_that_is_not_one_year_is_refused(
    tmp_path: Path, count: int, year: int, expected: int
) -> None:
    path = csv_file(tmp_path, "kwh", *["1"] * count)
    error = refused(path, year)
    assert error.location == str(path)
    assert error.message == (
        f"{count} rows is not one {year} year of hourly ({expected}), half-hourly or 15-minute intervals; "
        "add a timestamp column for other spans"
    )


def test_uneven_timestamps_are_refused_at_the_first_row_off_the_step(tmp_path: Path) -> None:
    rows = stamped("1", "1", "1", "1", "1")
    rows[3] = rows[3].replace("T03:00", "T03:30")  # row 5: 30 minutes late
    path = csv_file(tmp_path, "timestamp,kwh", *rows)
    error = refused(path)
    assert (error.location, error.message) == (
        f"{path}, row 5", "timestamps must rise by the same step on every row")  # fmt: skip


def test_timestamps_that_go_back_or_repeat_are_refused(tmp_path: Path) -> None:
    backwards = csv_file(tmp_path, "timestamp,kwh", *reversed(stamped("1", "1", "1")))
    assert refused(backwards).message == "timestamps must rise by the same step on every row"
    repeated = stamped("1", "1")
    path = csv_file(tmp_path, "timestamp,kwh", repeated[0], repeated[0], name="repeated.csv")
    assert refused(path).location == f"{path}, row 3"


def test_a_timestamp_without_an_offset_is_refused_at_its_row(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "timestamp,kwh", *stamped("1"), "2026-01-01T01:00:00,1")
    error = refused(path)
    assert (error.location, error.message) == (
        f"{path}, row 3, column timestamp", "'2026-01-01T01:00:00' has no UTC offset")  # fmt: skip
    path = csv_file(tmp_path, "timestamp,kwh", "1 Jan 2026 00:00 UTC,1", name="words.csv")
    error = refused(path)
    assert (error.location, error.message) == (
        f"{path}, row 2, column timestamp", "'1 Jan 2026 00:00 UTC' is not an ISO-8601 instant")  # fmt: skip


def test_a_file_without_a_kwh_column_rows_or_existence_is_refused_naming_it(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "timestamp,energy", *stamped("1"))
    error = refused(path)
    assert (error.location, error.message) == (str(path), "needs a `kwh` column (found: timestamp, energy)")
    empty = csv_file(tmp_path, "kwh", name="empty.csv")
    assert (refused(empty).location, refused(empty).message) == (str(empty), "has no rows")
    assert refused(tmp_path / "absent.csv").location == str(tmp_path / "absent.csv")


# --- prices ------------------------------------------------------------------------------------------------------


def test_prices_apply_from_their_row_onwards(tmp_path: Path) -> None:
    load = read_load(csv_file(tmp_path, "timestamp,kwh", *stamped("1", "1", "1", "1")), 2026, NEW_YORK)
    prices = csv_file(
        tmp_path, "timestamp,price", "2026-01-01T02:00:00+00:00,0.30", "2025-12-31T00:00:00+00:00,0.10",
        name="prices.csv",
    )  # fmt: skip
    priced = read_prices(prices, load)
    assert priced.price_micro is not None
    assert [int(p) for p in priced.price_micro] == [100_000, 100_000, 300_000, 300_000]


def test_a_price_that_is_not_a_number_or_starts_too_late_is_refused(tmp_path: Path) -> None:
    load = read_load(csv_file(tmp_path, "timestamp,kwh", *stamped("1", "1")), 2026, NEW_YORK)
    bad = csv_file(tmp_path, "timestamp,price", "2026-01-01T00:00:00+00:00,cheap", name="bad.csv")
    with pytest.raises(ValidationError) as caught:
        read_prices(bad, load)
    assert caught.value.location == f"{bad}, row 2, column price"
    late = csv_file(tmp_path, "timestamp,price", "2026-01-01T01:00:00+00:00,0.2", name="late.csv")
    with pytest.raises(ValidationError) as caught:
        read_prices(late, load)
    assert (caught.value.location, caught.value.message) == (
        str(late), "the price series starts after the first interval")  # fmt: skip


# --- through the command --------------------------------------------------------------------------------------


def test_the_command_prints_the_place_and_exits_2_without_a_bill(tmp_path: Path) -> None:
    tariff = tmp_path / "flat.json"
    tariff.write_text(
        json.dumps({"name": "flat", "currency": "USD", "timezone": "UTC", "periods": ["all"],
                    "energy": {"all_year/all": 0.1}}),
        encoding="utf-8",
    )  # fmt: skip
    rows = ["1"] * 8760
    rows[99] = "-1"
    load = csv_file(tmp_path, "kwh", *rows)
    result = CliRunner().invoke(
        app, ["tariff", "bill", "--tariff", str(tariff), "--load", str(load), "--year", "2026", "--json"]
    )
    assert result.exit_code == 2
    assert result.stdout == ""  # no partial bill
    assert f"{load}, row 101, column kwh: energy must be a finite number >= 0, got -1" in " ".join(
        result.stderr.split()
    )
    good = csv_file(tmp_path, "kwh", *["1"] * 8760, name="good.csv")
    result = CliRunner().invoke(
        app, ["tariff", "bill", "--tariff", str(tariff), "--load", str(good), "--year", "2026", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["annual_total"] == 876  # 8760 kWh x 0.10
    assert np.isclose(sum(m["total"] for m in json.loads(result.stdout)["months"]), 876)
