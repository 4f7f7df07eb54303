"""The registry on real PostgreSQL: the CSV import is all or nothing, and long values fit their columns."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from openami.cli.registry import app
from openami.common.clock import ManualClock
from openami.registry.csv_import import ImportErrors, import_registry_csv
from openami.registry.models import Meter, Site
from openami.registry.service import RegistryService
from openami.security.audit import AuditLog, decode_json
from openami.storage import migrate
from openami.storage.db import make_engine, make_session_factory
from tests.unit.registry.helpers import site_row, write_csv

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[3] / "docs" / "examples" / "registry.csv"


@pytest.fixture
def factory(pg_engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(pg_engine)


def _count(factory: sessionmaker[Session], table: type[Site] | type[Meter]) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(table)) or 0


def test_example_imports_once_and_the_second_time_writes_nothing(
    factory: sessionmaker[Session], clock: ManualClock
) -> None:
    summary = import_registry_csv(factory, EXAMPLE, clock)
    assert summary.total == 11
    with pytest.raises(ImportErrors):
        import_registry_csv(factory, EXAMPLE, clock)
    assert (_count(factory, Site), _count(factory, Meter)) == (1, 3)
    with factory() as session:
        meter = RegistryService.from_settings(clock).meter_by_serial(session, "KSM-0001")
    assert len(meter.auth_key) == 32


def test_longest_holiday_subdivision_fits(
    tmp_path: Path, factory: sessionmaker[Session], clock: ManualClock
) -> None:
    path = write_csv(
        tmp_path / "r.csv",
        [
            site_row(
                "SAO",
                timezone="America/Sao_Paulo",
                currency="BRL",
                holiday_country="BR",
                holiday_subdivision="São Paulo Capital",
            )
        ],
    )
    assert import_registry_csv(factory, path, clock).sites == 1


def test_cli_import_and_its_log_entry_commit_together(pg_url: str, clock: ManualClock) -> None:
    """On PostgreSQL (append lock, append-only triggers of the migrations): one entry, the chain verifies, and a
    second, refused import adds nothing."""
    migrate.upgrade(pg_url)
    runner = CliRunner()
    first = runner.invoke(app, ["import", str(EXAMPLE), "--database-url", pg_url])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["import", str(EXAMPLE), "--database-url", pg_url])
    assert again.exit_code == 1, again.output

    engine = make_engine(pg_url)
    try:
        factory = make_session_factory(engine)
        with factory() as session:
            audit = AuditLog(clock)
            [entry] = audit.entries(session)
            assert audit.verify(session).ok
        assert entry.action == "registry.imported"
        assert decode_json(entry.after)["records"]["meters"] == 3
        assert (_count(factory, Site), _count(factory, Meter)) == (1, 3)
    finally:
        engine.dispose()
