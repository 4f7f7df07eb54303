"""`openami registry import`: prints the summary, or every error and exit status 1."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from openami.cli.registry import app
from openami.registry.models import Site

from .helpers import customer_row, site_row, write_csv

EXAMPLE = Path(__file__).parents[3] / "docs" / "examples" / "registry.csv"


def _sites(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(Site)) or 0


def test_import_prints_the_summary(sqlite_engine: Engine, sqlite_url: str) -> None:
    result = CliRunner().invoke(app, ["import", str(EXAMPLE), "--database-url", sqlite_url])
    assert result.exit_code == 0, result.output
    assert "service points" in result.output
    assert "11" in result.output  # the total
    assert _sites(sqlite_engine) == 1


def test_import_lists_every_error_and_exits_1(sqlite_engine: Engine, sqlite_url: str, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "bad.csv",
        [site_row(timezone="Mars/Olympus_Mons"), customer_row("C-1", site="NOWHERE", email="x")],
    )
    result = CliRunner().invoke(app, ["import", str(path), "--database-url", sqlite_url])
    assert result.exit_code == 1
    assert "3 error(s)" in result.output
    assert "nothing was imported" in result.output
    assert "row 2, column timezone: unknown time zone 'Mars/Olympus_Mons'" in result.output
    assert "row 3, column email:" in result.output
    assert "row 3, column site: unknown site 'NOWHERE'" in result.output
    assert _sites(sqlite_engine) == 0


def test_unreadable_file_exits_1(sqlite_engine: Engine, sqlite_url: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["import", str(tmp_path / "none.csv"), "--database-url", sqlite_url])
    assert result.exit_code == 1
    assert "cannot read the registry file" in result.output
