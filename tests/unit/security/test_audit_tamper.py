"""Tampering with the audit table in SQL on SQLite, guards dropped as the database owner could: `openami audit
verify` catches every kind, at the right entry. The same tampers run on PostgreSQL in tests/integration/security."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from openami.cli.audit import app
from openami.common.clock import ManualClock
from tests.unit.security.chain_factory import PUBLIC_KEY
from tests.unit.security.sql_tampering import DIAGNOSES, ENTRIES, TAMPERS, build_log, drop_guards_as_attacker


@pytest.fixture
def exported(tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock) -> Path:
    path = tmp_path / "checkpoints.json"
    build_log(session_factory, clock, path)
    return path


def test_an_untouched_log_verifies(sqlite_url: str, exported: Path) -> None:
    result = CliRunner().invoke(app, ["verify", "--database-url", sqlite_url, "--checkpoints", str(exported)])
    assert result.exit_code == 0, result.output
    assert f"{ENTRIES} entries, chain intact, last checkpoint #2 (entry #{ENTRIES})" in result.output


@pytest.mark.parametrize("kind", list(TAMPERS))
def test_verify_names_the_first_bad_entry(
    kind: str,
    sqlite_url: str,
    sqlite_engine: Engine,
    session_factory: sessionmaker[Session],
    clock: ManualClock,
    exported: Path,
) -> None:
    with sqlite_engine.begin() as conn:
        drop_guards_as_attacker(conn)
        first_bad = TAMPERS[kind](conn)
    result = CliRunner().invoke(app, ["verify", "--database-url", sqlite_url, "--checkpoints", str(exported)])
    assert result.exit_code == 1, result.output
    assert f"audit log tampered with: entry #{first_bad}: " in result.output
    assert DIAGNOSES[kind] in result.output
    # The service says the same from the database alone, except for a cut tail whose checkpoints were deleted with
    # it: only the exported copy shows that, which is why checkpoints are exported.
    from openami.security.audit import AuditLog

    with session_factory() as session:
        assert AuditLog(clock).verify(session, [PUBLIC_KEY]).first_bad_id == (
            None if kind == "truncate_tail" else first_bad
        )


def test_a_cut_tail_is_caught_by_the_checkpoint_left_in_the_database(
    sqlite_engine: Engine, session_factory: sessionmaker[Session], clock: ManualClock, exported: Path
) -> None:
    from sqlalchemy import text

    from openami.security.audit import AuditLog

    with sqlite_engine.begin() as conn:
        drop_guards_as_attacker(conn)
        conn.execute(text("DELETE FROM audit_entry WHERE id > 8"))
    with session_factory() as session:
        report = AuditLog(clock).verify(session, [PUBLIC_KEY])
    assert (report.ok, report.first_bad_id) == (False, 9)
