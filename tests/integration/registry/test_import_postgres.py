"""The registry on real PostgreSQL: the CSV import is all or nothing, and long values fit their columns."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.registry.csv_import import ImportErrors, import_registry_csv
from openami.registry.models import Meter, Site
from openami.registry.service import RegistryService
from openami.storage.db import make_session_factory
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
