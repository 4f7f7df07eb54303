"""The operation log on real PostgreSQL: guards refuse UPDATE, DELETE and TRUNCATE; concurrent appends never fork
the chain; SQL tampering (guards dropped by the owner) is caught at the right entry."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from openami.cli.audit import app
from openami.common.clock import ManualClock
from openami.security.audit import AuditLog, install_guards, remove_guards
from openami.storage.db import make_session_factory, unit_of_work
from tests.unit.security.chain_factory import PUBLIC_KEY
from tests.unit.security.sql_tampering import DIAGNOSES, ENTRIES, TAMPERS, build_log, drop_guards_as_attacker

pytestmark = pytest.mark.integration


@pytest.fixture
def factory(pg_engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(pg_engine)


@pytest.fixture
def exported(tmp_path: Path, factory: sessionmaker[Session], clock: ManualClock) -> Path:
    path = tmp_path / "checkpoints.json"
    build_log(factory, clock, path)
    return path


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        (
            "UPDATE audit_entry SET actor = 'mallory' WHERE id = 1",
            "audit entries are append-only: UPDATE refused",
        ),
        ("DELETE FROM audit_entry WHERE id = 10", "audit entries are append-only: DELETE refused"),
        ("TRUNCATE audit_entry CASCADE", "audit entries are append-only: TRUNCATE refused"),
        ("UPDATE audit_checkpoint SET entry_id = 1", "audit checkpoints are append-only: UPDATE refused"),
        ("DELETE FROM audit_checkpoint", "audit checkpoints are append-only: DELETE refused"),
        ("TRUNCATE audit_checkpoint", "audit checkpoints are append-only: TRUNCATE refused"),
    ],
)
def test_guards_refuse_changes(
    pg_engine: Engine,
    factory: sessionmaker[Session],
    clock: ManualClock,
    exported: Path,
    statement: str,
    message: str,
) -> None:
    with pytest.raises(DBAPIError, match=message), pg_engine.begin() as conn:
        conn.execute(text(statement))
    with factory() as session:
        assert AuditLog(clock).verify(session, [PUBLIC_KEY]).checked == ENTRIES
    with pg_engine.begin() as conn:
        remove_guards(conn)
        conn.execute(text(statement))


def test_concurrent_appends_take_turns_and_never_fork(
    pg_engine: Engine, factory: sessionmaker[Session], clock: ManualClock
) -> None:
    with pg_engine.begin() as conn:
        install_guards(conn)
    log = AuditLog(clock)
    workers, each = 4, 15
    errors: list[BaseException] = []
    start = threading.Barrier(workers)

    def work(worker: int) -> None:
        try:
            start.wait()
            for i in range(each):
                with unit_of_work(factory) as session:
                    log.append(
                        session,
                        actor=f"worker{worker}",
                        role="system",
                        action="readings.batch.accept",
                        object_type="batch",
                        object_id=f"{worker}-{i}",
                    )
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with factory() as session:
        report = log.verify(session, [])
    assert (report.ok, report.checked) == (True, workers * each)


def test_entries_read_back_hash_the_same(factory: sessionmaker[Session], clock: ManualClock) -> None:
    clock.set(datetime(2026, 3, 2, 12, 30, 15, 123456, tzinfo=UTC))
    log = AuditLog(clock)
    with unit_of_work(factory) as session:
        written = log.append(
            session,
            actor="émile",
            role="billing",
            action="billing.payment.create",
            object_type="payment",
            object_id="P-1",
            after={"amount": Decimal("12.30"), "note": "a\u00a0b ✓"},
            reason="cash at the office",
            address="203.0.113.9",
            site_id=2,
        )
    with factory() as session:
        assert log.entries(session) == [written]
        assert log.verify(session, []).ok


@pytest.mark.parametrize("kind", list(TAMPERS))
def test_verify_names_the_first_bad_entry(kind: str, pg_url: str, pg_engine: Engine, exported: Path) -> None:
    with pg_engine.begin() as conn:
        drop_guards_as_attacker(conn)
        first_bad = TAMPERS[kind](conn)
    result = CliRunner().invoke(app, ["verify", "--database-url", pg_url, "--checkpoints", str(exported)])
    assert result.exit_code == 1, result.output
    assert f"audit log tampered with: entry #{first_bad}: " in result.output
    assert DIAGNOSES[kind] in result.output
