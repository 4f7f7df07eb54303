"""Migration 0004 on both databases: a meter stored in plaintext before it still works after it, `seal_legacy_keys`
seals it, rotation stores the previous key and its deadline, and the downgrade refuses to strand sealed keys."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import insert, text
from sqlalchemy.engine import make_url

from openami.common.clock import ManualClock
from openami.registry.models import Meter, Site
from openami.registry.service import RegistryService
from openami.security.meter_keys import MeterKeyCipher
from openami.storage import migrate
from openami.storage.db import make_engine, make_session_factory, unit_of_work

# Its downgrade is run on the test's own connection: through `alembic downgrade`, the failure would leave the
# migration environment's engine undisposed, and its connection would warn in whichever test runs next.
MIGRATION_0004 = importlib.import_module("openami.storage.migrations.versions.0004_meter_keys")
LEGACY_KEY = bytes(range(1, 33))
NEW_KEY = bytes(range(33, 65))


def _legacy_meter_survives_the_upgrade(url: str, clock: ManualClock, meter_keys: MeterKeyCipher) -> None:
    migrate.upgrade(url, "0003")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:  # a registry as the code before 0004 wrote it
            site_id = conn.execute(
                insert(Site.__table__).values(
                    code="LEG",
                    name="Legacy",
                    timezone="UTC",
                    currency="EUR",
                    holiday_country="DE",
                    created_at=clock.now(),
                )
            ).inserted_primary_key[0]
            conn.execute(
                insert(Meter.__table__).values(
                    site_id=site_id, serial="LEG-1", model="old", rated_current_a=60, auth_key=LEGACY_KEY
                )
            )
        migrate.upgrade(url)
        migrate.check(url)
        factory = make_session_factory(engine)
        registry = RegistryService(clock, meter_keys)
        with factory() as session:
            assert registry.meter_by_serial(session, "LEG-1").auth_key == LEGACY_KEY
        with unit_of_work(factory) as session:
            assert registry.seal_legacy_keys(session) == 1
        with engine.connect() as conn:
            stored = bytes(conn.execute(text("SELECT auth_key FROM meter")).scalar_one())
        assert LEGACY_KEY not in stored
        assert meter_keys.open("LEG-1", stored) == LEGACY_KEY

        with unit_of_work(factory) as session:
            registry.rotate_meter_key(session, "LEG-1", NEW_KEY, timedelta(hours=3))
        with factory() as session:
            meter = registry.meter_by_serial(session, "LEG-1")
        assert (meter.auth_key, meter.previous_auth_key) == (NEW_KEY, LEGACY_KEY)
        assert meter.previous_key_until == clock.now() + timedelta(hours=3)

        with (
            engine.begin() as conn,
            Operations.context(MigrationContext.configure(conn)),
            pytest.raises(RuntimeError, match=r"1 meter key\(s\) are sealed"),
        ):
            MIGRATION_0004.downgrade()
        with factory() as session:  # refused before anything of 0004 was undone
            assert registry.meter_by_serial(session, "LEG-1").previous_auth_key == LEGACY_KEY
    finally:
        engine.dispose()


def test_sqlite_legacy_keys_across_migration_0004(
    sqlite_url: str, clock: ManualClock, meter_keys: MeterKeyCipher
) -> None:
    assert make_url(sqlite_url).get_backend_name() == "sqlite"
    _legacy_meter_survives_the_upgrade(sqlite_url, clock, meter_keys)


@pytest.mark.integration
def test_postgres_legacy_keys_across_migration_0004(
    pg_url: str, clock: ManualClock, meter_keys: MeterKeyCipher
) -> None:
    _legacy_meter_survives_the_upgrade(pg_url, clock, meter_keys)
