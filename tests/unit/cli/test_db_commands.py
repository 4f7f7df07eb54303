"""`openami db upgrade` builds the schema; `openami db check` agrees, and says so when it does not."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from typer.testing import CliRunner

from openami.cli.main import app
from openami.storage.db import make_engine


def test_upgrade_then_check(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade", "--database-url", url]).exit_code == 0
    result = runner.invoke(app, ["db", "check", "--database-url", url])
    assert result.exit_code == 0, result.output


def test_check_fails_when_the_schema_drifted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade", "--database-url", url]).exit_code == 0
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE meter ADD COLUMN colour VARCHAR(10)"))
    engine.dispose()
    result = runner.invoke(app, ["db", "check", "--database-url", url])
    assert result.exit_code == 1
    assert "drifted" in result.output
