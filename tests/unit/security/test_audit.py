"""The operation log's service on SQLite: appends in the caller's transaction, guards, checkpoints, export."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.common.errors import NotFoundError, ValidationError
from openami.security.audit import (
    AuditCheckpoint,
    AuditEntry,
    AuditLog,
    checkpoint_from_dict,
    decode_json,
    generate_signing_key,
    install_guards,
    load_signing_key,
    remove_guards,
)
from openami.security.audit_chain import GENESIS_HASH, AuditEntryInfo, checkpoint_signature_valid, entry_hash
from openami.storage.db import unit_of_work
from tests.unit.security.chain_factory import PUBLIC_KEY, SIGNING_KEY


def _append(log: AuditLog, session: Session, object_id: str = "M1", **extra: Any) -> AuditEntryInfo:
    return log.append(
        session,
        actor="alice",
        role="operator",
        action="registry.meter.create",
        object_type="meter",
        object_id=object_id,
        **extra,
    )


def _count(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(AuditEntry)) or 0


def test_appends_form_a_chain_from_genesis(
    session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    log = AuditLog(clock)
    with unit_of_work(session_factory) as session:
        first = log.append(
            session,
            actor="alice",
            role="billing",
            action="billing.tariff.update",
            object_type="tariff",
            object_id="T1",
            before={"price_per_kwh": Decimal("0.2500"), "valid_from": datetime(2026, 1, 1, tzinfo=UTC)},
            after={"price_per_kwh": Decimal("0.2750")},
            reason="regulator decision 2026/4",
            address="2001:db8::1",
            site_id=3,
        )
        clock.advance(timedelta(seconds=5))
        second = log.append(
            session, actor="system", role="system", action="x.y", object_type="meter", object_id="M1"
        )
    assert (first.id, second.id) == (1, 2)
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    assert first.before == '{"price_per_kwh":"0.2500","valid_from":"2026-01-01T00:00:00.000000Z"}'
    assert decode_json(first.after) == {"price_per_kwh": "0.2750"}
    assert second.before is None
    with session_factory() as session:
        stored = log.entries(session)
    assert stored == [first, second]  # what comes back from the database hashes the same
    assert all(entry_hash(e) == e.hash for e in stored)
    assert stored[1].at == datetime(2026, 3, 2, 0, 0, 5, tzinfo=UTC)


def test_append_joins_the_callers_transaction_and_never_commits(
    session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    log = AuditLog(clock)
    with session_factory() as session:
        _append(log, session)
        session.rollback()
    assert _count(session_factory) == 0
    with session_factory() as session:
        _append(log, session)
        # closed without commit
    assert _count(session_factory) == 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"actor": ""}, "audit entry actor: must be a non-empty string"),
        ({"role": "r" * 41}, "audit entry role: longer than 40 characters"),
        ({"address": "x" * 46}, "audit entry address: longer than 45 characters"),
        ({"reason": "a\x00b"}, "audit entry reason: contains a NUL character"),
        ({"reason": " "}, "audit entry reason: must be a non-empty string"),
        ({"after": {"at": datetime(2026, 1, 1)}}, "after.at: naive datetime"),  # noqa: DTZ001  (refused on purpose)
        ({"before": {"x": float("nan")}}, "before.x: nan has no JSON form"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(
    session_factory: sessionmaker[Session], clock: ManualClock, changes: dict[str, object], message: str
) -> None:
    log = AuditLog(clock)
    arguments: dict[str, Any] = {
        "actor": "alice",
        "role": "operator",
        "action": "registry.meter.create",
        "object_type": "meter",
        "object_id": "M1",
        **changes,
    }
    with unit_of_work(session_factory) as session, pytest.raises(ValidationError, match=message):
        log.append(session, **arguments)
    assert _count(session_factory) == 0


def test_a_second_entry_with_the_same_place_in_the_chain_is_refused(
    session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    log = AuditLog(clock)
    with unit_of_work(session_factory) as session:
        first = _append(log, session)
    with session_factory() as session:
        session.add(AuditEntry(**{**vars(first), "hash": "a" * 64}))  # same id: a fork
        with pytest.raises(IntegrityError):
            session.flush()


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        (
            "UPDATE audit_entry SET actor = 'mallory' WHERE id = 1",
            "audit entries are append-only: UPDATE refused",
        ),
        ("DELETE FROM audit_entry WHERE id = 1", "audit entries are append-only: DELETE refused"),
        ("UPDATE audit_checkpoint SET entry_id = 2", "audit checkpoints are append-only: UPDATE refused"),
        ("DELETE FROM audit_checkpoint", "audit checkpoints are append-only: DELETE refused"),
    ],
)
def test_guards_refuse_update_and_delete_on_sqlite(
    sqlite_engine: Engine,
    session_factory: sessionmaker[Session],
    clock: ManualClock,
    statement: str,
    message: str,
) -> None:
    with sqlite_engine.begin() as conn:
        install_guards(conn)
    log = AuditLog(clock)
    with unit_of_work(session_factory) as session:
        _append(log, session)
        log.checkpoint(session, SIGNING_KEY)
    with pytest.raises(Exception, match=message), sqlite_engine.begin() as conn:
        conn.execute(text(statement))
    with unit_of_work(session_factory) as session:  # appending still works
        _append(log, session, "M2")
    with session_factory() as session:
        assert log.verify(session, [PUBLIC_KEY]).ok
    with sqlite_engine.begin() as conn:
        remove_guards(conn)
        conn.execute(text(statement))


def test_checkpoint_signs_the_newest_entry_and_exports_as_json(
    session_factory: sessionmaker[Session], clock: ManualClock
) -> None:
    log = AuditLog(clock)
    with unit_of_work(session_factory) as session, pytest.raises(NotFoundError, match="audit log is empty"):
        log.checkpoint(session, SIGNING_KEY)
    pem, public_hex = generate_signing_key()
    with unit_of_work(session_factory) as session:
        _append(log, session)
        second = _append(log, session, "M2")
        clock.advance(timedelta(hours=1))
        cp = log.checkpoint(session, pem)
    assert (cp.id, cp.entry_id, cp.entry_hash, cp.public_key) == (1, 2, second.hash, public_hex)
    assert cp.at == datetime(2026, 3, 2, 1, tzinfo=UTC)
    assert checkpoint_signature_valid(cp)
    with session_factory() as session:
        exported = log.export_checkpoints(session)
        assert json.loads(json.dumps(exported)) == exported
        assert exported[0]["at"] == "2026-03-02T01:00:00.000000Z"
        assert checkpoint_from_dict(exported[0], "file") == cp
        report = log.verify(session, [public_hex])
        assert (report.ok, report.checked, report.last_checkpoint) == (True, 2, cp)
        assert not log.verify(session, [PUBLIC_KEY]).ok  # signed by another key than the trusted one
        assert session.scalar(select(func.count()).select_from(AuditCheckpoint)) == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "a checkpoint must be a JSON object"),
        ({"entry_id": "1"}, "entry_id must be an integer, got '1'"),
        (
            {
                "entry_id": 1,
                "entry_hash": "a",
                "at": "2026-03-02T00:00:00",
                "public_key": "",
                "signature": "",
            },
            "at: at must be timezone-aware",
        ),
    ],
)
def test_bad_exported_checkpoints_are_refused_with_their_place(data: object, message: str) -> None:
    with pytest.raises(ValidationError, match=f"cps.json, checkpoint 2: {message}"):
        checkpoint_from_dict(data, "cps.json, checkpoint 2")


def test_only_ed25519_pem_keys_are_accepted() -> None:
    with pytest.raises(ValidationError, match=r"key\.pem: not an unencrypted PEM private key"):
        load_signing_key(b"not a key", "key.pem")
    pem, public_hex = generate_signing_key()
    assert len(public_hex) == 64
    assert load_signing_key(pem).sign(b"x")
