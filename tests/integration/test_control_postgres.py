"""Relay control on the real PostgreSQL: the migration builds what the models describe, and a command goes from
queued to confirmed with every step in the operation log, while a repeated request key returns the same row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from openami.common.clock import ManualClock
from openami.control.interfaces import CommandState
from openami.control.service import ControlService
from openami.registry.service import RegistryService
from openami.security.audit import AuditEntry
from openami.security.meter_keys import MeterKeyCipher
from openami.storage import all_models, migrate
from openami.storage.db import make_engine, make_session_factory
from tests.unit.control.conftest import CONTROL_REVISION, FakeSender, build_world

CONTROL_TABLES = {
    "control_policy",
    "supply_protection",
    "weather_emergency",
    "control_bulk_operation",
    "relay_command",
}


def test_control_on_postgres(pg_url: str, meter_keys: MeterKeyCipher) -> None:
    migrate.upgrade(pg_url, CONTROL_REVISION)
    engine = make_engine(pg_url)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), all_models.metadata)
        assert [d for d in diffs if _table_of(d) in CONTROL_TABLES] == []

        clock = ManualClock(datetime(2026, 3, 3, 7, 0, tzinfo=UTC))
        registry = RegistryService(clock, meter_keys)
        control = ControlService(clock, registry)
        factory = make_session_factory(engine)
        world = build_world(factory, registry)
        sender = FakeSender()
        args = {"actor": "alice", "role": "operator", "reason": "arrears"}
        with factory() as s, s.begin():
            cmd = control.request(s, meter_id=world.home.id, kind="disconnect", request_key="pg-1", **args)
        with factory() as s, s.begin():
            assert (
                control.request(s, meter_id=world.home.id, kind="disconnect", request_key="pg-1", **args)
                == cmd
            )
            assert control.send_due(s, sender).sent == 1
        clock.advance(timedelta(seconds=3))
        with factory() as s, s.begin():
            control.on_relay_report(s, world.home.id, False, clock.now())
        with factory() as s:
            assert control.get(s, cmd.id).state is CommandState.CONFIRMED
            logged = s.scalar(
                select(func.count()).where(
                    AuditEntry.object_type == "relay_command", AuditEntry.object_id == str(cmd.id)
                )
            )
            assert logged == 3
    finally:
        engine.dispose()
    command.downgrade(migrate.alembic_config(pg_url), "0008")  # the downgrade runs clean too


def _table_of(diff: Any) -> str | None:
    """The table a difference from `compare_metadata` is about (a tuple, or a list of tuples for modify_*)."""
    if isinstance(diff, list):
        return _table_of(diff[0])
    for part in diff[1:]:
        if isinstance(part, str) and part in CONTROL_TABLES:
            return part
        table = getattr(part, "table", None) if not hasattr(part, "columns") else part
        name = getattr(table, "name", None)
        if isinstance(name, str):
            return name
    return None
