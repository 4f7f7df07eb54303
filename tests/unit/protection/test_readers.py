"""Bad input files stop the run with the file and the rows named, or, where a row can be set aside without
changing any score, a warning that names them; the resolution is detected from the rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from openami.common.errors import ValidationError
from openami.protection.readers import read_events, read_mapping, read_readings


def _file(tmp_path: Path, text: str, name: str = "readings.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


HEADER = "meter_id,timestamp,energy_wh\n"


def _rows(meter: str, count: int, step_min: int = 30, start_hour: int = 0) -> str:
    out = []
    for n in range(count):
        minute = start_hour * 60 + n * step_min
        day, rest = divmod(minute, 1440)
        out.append(f"{meter},2026-03-{1 + day:02d}T{rest // 60:02d}:{rest % 60:02d}:00Z,{100 + n}\n")
    return "".join(out)


@pytest.mark.parametrize(("step", "expected"), [(15, 15), (30, 30), (1440, 1440)])
def test_resolution_is_detected(tmp_path: Path, step: int, expected: int) -> None:
    loaded = read_readings(_file(tmp_path, HEADER + _rows("A", 10, step) + _rows("B", 10, step)))
    assert loaded.grid.interval_min == expected
    assert loaded.grid.ids == ("A", "B")
    assert loaded.warnings == ()


def test_missing_rows_are_nan_and_the_grid_keeps_its_step(tmp_path: Path) -> None:
    text = HEADER + "".join(
        line for n, line in enumerate(_rows("A", 96).splitlines(True)) if n not in {3, 50}
    )
    grid = read_readings(_file(tmp_path, text)).grid
    assert grid.energy_wh.shape == (1, 2, 48)
    assert np.isnan(grid.energy_wh[0, 0, 3])
    assert np.isnan(grid.energy_wh[0, 1, 2])
    assert grid.energy_wh[0, 1, 3] == 100 + 51


def test_daily_rows_at_local_midnight_land_on_their_own_date(tmp_path: Path) -> None:
    text = HEADER + "A,2026-03-01T00:00:00+03:00,5000\nA,2026-03-02T00:00:00+03:00,6000\n"
    grid = read_readings(_file(tmp_path, text)).grid
    assert (grid.interval_min, grid.first_day.isoformat()) == (1440, "2026-03-01")
    assert grid.energy_wh[0, :, 0].tolist() == [5000, 6000]


@pytest.mark.parametrize(
    ("rows", "words"),
    [
        (
            "A,2026-03-01T00:00:00Z,abc\nA,2026-03-01T00:30:00Z,1\n",
            "energy_wh is not a number: row 2 ('abc')",
        ),
        ("A,2026-03-01T00:00:00Z,nan\nA,2026-03-01T00:30:00Z,1\n", "energy_wh is not a number: row 2"),
        ("A,2026-03-01T00:00:00Z,1\nA,2026-03-01T00:30:00Z,-5\n", "negative energy_wh: row 3 (-5)"),
        (
            "A,2026-03-01T00:00:00,1\nA,2026-03-01T00:30:00Z,1\n",
            "bad timestamp: row 2 ('2026-03-01T00:00:00' has no zone",
        ),
        ("A,yesterday,1\nA,2026-03-01T00:30:00Z,1\n", "bad timestamp: row 2 ('yesterday' is not an ISO-8601"),
        (
            "A,2026-03-01T00:00:00Z,1\nA,2026-03-01T00:00:00Z,2\n",
            "different energy_wh for the same meter_id and timestamp: rows 2 and 3",
        ),
        ("A,2026-03-01T00:00:00Z,1\nA,2026-03-01T00:10:00Z,2\n", "rows are 10 minutes apart"),
        ("A,2026-03-01T00:10:00Z,1\nA,2026-03-01T00:40:00Z,2\n", "off the 30-minute grid"),
        ("A,2026-03-01T00:00:00Z,1\nB,2026-03-01T00:00:00Z,2\n", "every meter_id has a single row"),
    ],
)
def test_bad_rows_are_errors_naming_file_and_row(tmp_path: Path, rows: str, words: str) -> None:
    path = _file(tmp_path, HEADER + rows)
    with pytest.raises(ValidationError) as caught:
        read_readings(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert words in str(caught.value)


def test_many_bad_rows_list_the_first_five(tmp_path: Path) -> None:
    rows = "".join(f"A,2026-03-01T{h:02d}:00:00Z,x\n" for h in range(9))
    with pytest.raises(ValidationError, match=r"rows 2 \('x'\), 3 .*6 \('x'\) and 4 more$"):
        read_readings(_file(tmp_path, HEADER + rows))


@pytest.mark.parametrize(
    ("text", "words"),
    [("", "the file is empty"), (HEADER, "no data rows"), ("meter,time,wh\nA,1,2\n", "missing column(s)")],
)
def test_empty_or_headerless_files_are_errors(tmp_path: Path, text: str, words: str) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(ValidationError) as caught:
        read_readings(path)
    assert str(path) in str(caught.value)
    assert words in str(caught.value)


def test_unsorted_and_exactly_duplicated_rows_are_warnings_and_do_not_change_the_data(tmp_path: Path) -> None:
    ordered = _rows("A", 6)
    lines = ordered.splitlines(True)
    shuffled = lines[3:] + lines[:3] + [lines[4]]  # rows 5-7 first, then 2-4, then a copy of row 3's data
    clean = read_readings(_file(tmp_path, HEADER + ordered, "clean.csv"))
    messy = read_readings(_file(tmp_path, HEADER + "".join(shuffled), "messy.csv"))
    np.testing.assert_array_equal(messy.grid.energy_wh, clean.grid.energy_wh)
    assert any("not in time order" in w and "rows 5" in w for w in messy.warnings)
    assert any("exact duplicate rows ignored" in w and "rows 8" in w for w in messy.warnings)
    assert all(str(tmp_path / "messy.csv") in w for w in messy.warnings)


def test_transformer_column_and_a_meter_on_two_transformers(tmp_path: Path) -> None:
    good = "meter_id,timestamp,energy_wh,transformer_id\nA,2026-03-01T00:00:00Z,1,T1\nA,2026-03-02T00:00:00Z,1,T1\n"
    assert read_readings(_file(tmp_path, good)).transformer_of == {"A": "T1"}
    bad = good + "A,2026-03-03T00:00:00Z,1,T2\n"
    with pytest.raises(
        ValidationError, match=r"a meter under two transformers: row 4 \(A: T1 at row 2, T2 here\)"
    ):
        read_readings(_file(tmp_path, bad))


def test_mapping_unknown_meters_warn_and_conflicts_fail(tmp_path: Path) -> None:
    path = _file(tmp_path, "meter_id,transformer_id\nA,T1\nZ,T1\n", "map.csv")
    mapping, warnings = read_mapping(path, ["A"])
    assert mapping == {"A": "T1"}
    assert warnings == (f"{path}: meters without readings ignored: rows 3",)
    clash = _file(tmp_path, "meter_id,transformer_id\nA,T1\nA,T2\n", "clash.csv")
    with pytest.raises(ValidationError, match=r"clash.csv: a meter under two transformers: row 3"):
        read_mapping(clash, ["A"])


def test_events_parse_open_ends_warn_on_unknown_meters_and_refuse_bad_rows(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        "meter_id,start,end,code\nA,2026-03-01T01:00:00Z,2026-03-01T02:00:00Z,MAGNETIC\n"
        "A,2026-03-02T01:00:00+01:00,,COVER_OPEN\nGHOST,2026-03-01T01:00:00Z,,MAGNETIC\n",
        "events.csv",
    )
    events, warnings = read_events(path, ["A"])
    assert [(e.code, e.end is None, e.start.hour) for e in events] == [
        ("MAGNETIC", False, 1),
        ("COVER_OPEN", True, 0),
    ]
    assert warnings == (f"{path}: events of meters without readings ignored: rows 4",)
    backwards = _file(
        tmp_path, "meter_id,start,end,code\nA,2026-03-02T00:00:00Z,2026-03-01T00:00:00Z,X\n", "b.csv"
    )
    with pytest.raises(ValidationError, match=r"b.csv: end before start: row 2"):
        read_events(backwards, ["A"])
    naive = _file(tmp_path, "meter_id,start,end,code\nA,2026-03-02T00:00:00,,X\n", "n.csv")
    with pytest.raises(ValidationError, match=r"n.csv: bad timestamp: row 2 .*has no zone"):
        read_events(naive, ["A"])
