"""`openami theft score` writes one row per meter, most suspicious first, with reasons; a bad file exits 2 with the
file and row named."""

from __future__ import annotations

import csv
from pathlib import Path

from typer.testing import CliRunner

from openami.cli.main import app
from tests.unit.protection.fleet import honest_fleet, write_mapping, write_readings, write_transformers


def test_the_cli_ranks_the_thief_first_and_writes_every_meter(tmp_path: Path) -> None:
    fleet = honest_fleet()
    fleet.metered_wh[fleet.index("M03"), 20:] *= 0.5  # bypass from day 20: T1 sees the energy, the meter not
    for name, writer in (("readings", write_readings), ("tx", write_transformers), ("map", write_mapping)):
        writer(tmp_path / f"{name}.csv", fleet)
    (tmp_path / "events.csv").write_text("meter_id,start,end,code\nM07,2026-03-05T10:00:00Z,,COVER_OPEN\n")
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(
        app,
        [
            "theft",
            "score",
            "--readings",
            str(tmp_path / "readings.csv"),
            "--transformers",
            str(tmp_path / "tx.csv"),
            "--mapping",
            str(tmp_path / "map.csv"),
            "--events",
            str(tmp_path / "events.csv"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["meter_id"] for row in rows][:2] == ["M03", "M07"]
    assert len(rows) == len(fleet.meter_ids)
    assert [float(r["score"]) for r in rows] == sorted((float(r["score"]) for r in rows), reverse=True)
    assert "transformer T1 loss rose" in rows[0]["reasons"]
    assert "1 tamper event: 1× COVER_OPEN" in rows[1]["reasons"]


def test_the_transformer_column_replaces_the_mapping(tmp_path: Path) -> None:
    fleet = honest_fleet()
    fleet.metered_wh[fleet.index("M10"), 20:] *= 0.5
    write_readings(tmp_path / "readings.csv", fleet, transformer_column=True, daily=True)
    write_transformers(tmp_path / "tx.csv", fleet)
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(
        app,
        [
            "theft",
            "score",
            "--readings",
            str(tmp_path / "readings.csv"),
            "--transformers",
            str(tmp_path / "tx.csv"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    with out.open() as handle:
        first = next(csv.DictReader(handle))
    assert first["meter_id"] == "M10"
    assert "transformer T2 loss rose" in first["reasons"]


def test_a_bad_file_exits_2_naming_file_and_row(tmp_path: Path) -> None:
    readings = tmp_path / "readings.csv"
    readings.write_text(
        "meter_id,timestamp,energy_wh\nA,2026-03-01T00:00:00Z,1\nA,2026-03-01T00:30:00Z,lots\n"
    )
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(app, ["theft", "score", "--readings", str(readings), "--out", str(out)])
    assert result.exit_code == 2
    assert "readings.csv: energy_wh is not a number: row 3 ('lots')" in " ".join(result.output.split())
    assert not out.exists()


def test_transformers_without_a_mapping_is_an_error(tmp_path: Path) -> None:
    fleet = honest_fleet(meters=4, days=20)
    write_readings(tmp_path / "readings.csv", fleet, daily=True)
    write_transformers(tmp_path / "tx.csv", fleet)
    result = CliRunner().invoke(
        app,
        [
            "theft",
            "score",
            "--readings",
            str(tmp_path / "readings.csv"),
            "--transformers",
            str(tmp_path / "tx.csv"),
            "--out",
            str(tmp_path / "o.csv"),
        ],
    )
    assert result.exit_code == 2
    assert "needs --mapping or a transformer_id column" in " ".join(result.output.split())
