"""`openami registry import`: prints the summary, or every error and exit status 1; records the import in the
operation log in the same transaction, and seals meter keys with the container's cipher."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text
from typer.testing import CliRunner

from openami import bootstrap as bootstrap_module
from openami.bootstrap import Container
from openami.cli import registry as registry_cli
from openami.cli.common import cli_actor
from openami.cli.registry import app
from openami.common.clock import ManualClock
from openami.config import Settings
from openami.registry.models import Meter, Site
from openami.security.audit import AuditLog, decode_json
from openami.security.audit_chain import AuditEntryInfo
from openami.security.meter_keys import MasterKey, MeterKeyCipher
from openami.storage.db import make_session_factory

from .helpers import customer_row, meter_row, site_row, write_csv

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


def _entries(engine: Engine, clock: ManualClock) -> list[AuditEntryInfo]:
    with make_session_factory(engine)() as session:
        return AuditLog(clock).entries(session)


def test_import_is_recorded_once_with_its_counts(
    sqlite_engine: Engine, sqlite_url: str, clock: ManualClock
) -> None:
    result = CliRunner().invoke(app, ["import", str(EXAMPLE), "--database-url", sqlite_url])
    assert result.exit_code == 0, result.output

    [entry] = _entries(sqlite_engine, clock)
    with sqlite_engine.connect() as connection:
        site_id = connection.scalar(select(Site.id).where(Site.code == "KSM"))
    assert (entry.actor, entry.role, entry.action) == (cli_actor(), "cli", "registry.imported")
    assert entry.actor.startswith("cli:")
    assert (entry.object_type, entry.object_id, entry.site_id) == ("registry_file", "registry.csv", site_id)
    assert decode_json(entry.after) == {
        "file": str(EXAMPLE),
        "site_codes": ["KSM"],
        "records": {
            "sites": 1,
            "customers": 2,
            "accounts": 2,
            "transformers": 1,
            "service_points": 2,
            "meters": 3,
        },
    }


def test_an_import_of_several_sites_is_one_entry_under_no_site(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path, clock: ManualClock
) -> None:
    path = write_csv(
        tmp_path / "two.csv",
        [site_row("AAA"), site_row("BBB"), customer_row("C-1", site="BBB"), meter_row("M-1", site="AAA")],
    )
    result = CliRunner().invoke(app, ["import", str(path), "--database-url", sqlite_url])
    assert result.exit_code == 0, result.output

    [entry] = _entries(sqlite_engine, clock)
    assert entry.site_id is None
    after = decode_json(entry.after)
    assert after["site_codes"] == ["AAA", "BBB"]
    assert after["records"] == {
        "sites": 2,
        "customers": 1,
        "accounts": 0,
        "transformers": 0,
        "service_points": 0,
        "meters": 1,
    }


def test_a_refused_import_records_nothing(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path, clock: ManualClock
) -> None:
    path = write_csv(tmp_path / "bad.csv", [site_row(), customer_row("C-1", site="NOWHERE")])
    result = CliRunner().invoke(app, ["import", str(path), "--database-url", sqlite_url])
    assert result.exit_code == 1
    assert _entries(sqlite_engine, clock) == []


def test_the_import_is_undone_when_its_log_entry_cannot_be_written(
    sqlite_engine: Engine, sqlite_url: str
) -> None:
    with sqlite_engine.begin() as connection:  # the operation log is unusable: the entry's INSERT fails
        connection.execute(text("DROP TABLE audit_entry"))

    result = CliRunner().invoke(app, ["import", str(EXAMPLE), "--database-url", sqlite_url])

    assert result.exit_code == 1
    assert "cannot use the database" in result.output
    assert "nothing was imported" in result.output
    assert _sites(sqlite_engine) == 0  # same transaction: no import without its entry
    with sqlite_engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Meter)) == 0


def test_meter_keys_are_sealed_with_the_containers_cipher(
    sqlite_engine: Engine, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not with one the import would build from the environment's settings (there: TEST_MASTER_KEY)."""
    own = MeterKeyCipher([MasterKey("container-own", bytes(range(100, 132)))])

    def bootstrap_with_own_cipher(settings: Settings) -> Container:
        return bootstrap_module.bootstrap(settings, meter_keys=own)

    monkeypatch.setattr(registry_cli, "bootstrap", bootstrap_with_own_cipher)
    result = CliRunner().invoke(app, ["import", str(EXAMPLE), "--database-url", sqlite_url])
    assert result.exit_code == 0, result.output

    with sqlite_engine.connect() as connection:
        stored = {
            serial: bytes(key) for serial, key in connection.execute(select(Meter.serial, Meter.auth_key))
        }
    assert len(stored) == 3
    for serial, blob in stored.items():
        assert own.key_id_of(serial, blob) == "container-own"
        assert len(own.open(serial, blob)) == 32


def test_missing_master_key_exits_2_without_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAMI_MASTER_KEYS", raising=False)
    monkeypatch.delenv("OPENAMI_MASTER_KEY_FILE", raising=False)
    result = CliRunner().invoke(
        app, ["import", str(EXAMPLE), "--database-url", "postgresql://postgres@127.0.0.1:5432/unused"]
    )
    assert result.exit_code == 2
    assert "no master key" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
