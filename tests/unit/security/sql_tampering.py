"""What an attacker with the database owner's rights would do to the audit table, in plain SQL, on either database.

Each tamper takes a connection (guards already dropped) and returns the id of the first entry it made bad.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.security.audit import AuditEntry, AuditLog, install_guards
from openami.security.audit_chain import AuditEntryInfo, entry_hash
from openami.storage.db import unit_of_work
from tests.unit.security.chain_factory import SIGNING_KEY

ENTRIES = 10


def build_log(factory: sessionmaker[Session], clock: ManualClock, export_to: Path) -> AuditLog:
    """Ten entries in separate transactions, checkpoints after #5 and #10, exported to `export_to`; guards on."""
    engine = factory.kw["bind"]
    assert isinstance(engine, Engine)
    with engine.begin() as conn:
        install_guards(conn)
    log = AuditLog(clock)
    for i in range(1, ENTRIES + 1):
        clock.advance(timedelta(minutes=1))
        with unit_of_work(factory) as session:
            log.append(
                session,
                actor="alice",
                role="operator",
                action="headend.relay.open",
                object_type="meter",
                object_id=f"M{i:03d}",
                before={"relay": "closed"},
                after={"relay": "open"},
                reason="unpaid",
                address="198.51.100.4",
                site_id=1,
            )
            if i in (5, ENTRIES):
                log.checkpoint(session, SIGNING_KEY)
    with factory() as session:
        export_to.write_text(json.dumps({"checkpoints": log.export_checkpoints(session)}), encoding="utf-8")
    return log


def drop_guards_as_attacker(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        for table in ("audit_entry", "audit_checkpoint"):
            conn.execute(text(f"DROP TRIGGER {table}_no_change ON {table}"))
    else:
        for table in ("audit_entry", "audit_checkpoint"):
            conn.execute(text(f"DROP TRIGGER {table}_no_update"))
            conn.execute(text(f"DROP TRIGGER {table}_no_delete"))


def _row(conn: Connection, entry_id: int) -> AuditEntryInfo:
    # Read through the model, so `at` comes back aware on SQLite too.
    row = Session(bind=conn).get_one(AuditEntry, entry_id)
    return AuditEntryInfo(**{f.name: getattr(row, f.name) for f in dataclasses.fields(AuditEntryInfo)})


def _move(conn: Connection, old_id: int, new_id: int) -> None:
    conn.execute(text("UPDATE audit_entry SET id = :new WHERE id = :old"), {"new": new_id, "old": old_id})


def edit(conn: Connection) -> int:
    conn.execute(text("""UPDATE audit_entry SET after = '{"relay":"closed"}' WHERE id = 6"""))
    return 6


def edit_and_rehash(conn: Connection) -> int:
    forged = dataclasses.replace(_row(conn, 4), actor="mallory")
    conn.execute(
        text("UPDATE audit_entry SET actor = 'mallory', hash = :hash WHERE id = 4"),
        {"hash": entry_hash(forged)},
    )
    return 4


def delete(conn: Connection) -> int:
    conn.execute(text("DELETE FROM audit_entry WHERE id = 3"))
    return 3


def insert(conn: Connection) -> int:
    """Make room at #7 by shifting ids, then insert an entry whose own hash and link to #6 are right."""
    for entry_id in range(ENTRIES, 6, -1):
        _move(conn, entry_id, entry_id + 1)
    previous = _row(conn, 6)
    forged = dataclasses.replace(
        previous, id=7, action="billing.payment.create", object_id="A042", prev_hash=previous.hash
    )
    forged = dataclasses.replace(forged, hash=entry_hash(forged))
    session = Session(bind=conn)
    session.add(AuditEntry(**dataclasses.asdict(forged)))
    session.flush()
    return 7


def reorder(conn: Connection) -> int:
    """Swap the contents of #2 and #8 (every column but the id)."""
    _move(conn, 2, -2)
    _move(conn, 8, 2)
    _move(conn, -2, 8)
    return 2


def truncate_tail(conn: Connection) -> int:
    """Cut #8..#10 off, and the checkpoint in the database that would show it; the exported copy remains."""
    conn.execute(text("DELETE FROM audit_checkpoint WHERE entry_id > 7"))
    conn.execute(text("DELETE FROM audit_entry WHERE id > 7"))
    return 8


TAMPERS: dict[str, Callable[[Connection], int]] = {
    "edit": edit,
    "edit_and_rehash": edit_and_rehash,
    "delete": delete,
    "insert": insert,
    "reorder": reorder,
    "truncate_tail": truncate_tail,
}

# What `verify` says about each tamper, besides naming the entry.
DIAGNOSES = {
    "edit": "was edited",
    "edit_and_rehash": "was rewritten",
    "delete": "is missing (deleted)",
    "insert": "was inserted",
    "reorder": "entries reordered",
    "truncate_tail": "tail cut off",
}
