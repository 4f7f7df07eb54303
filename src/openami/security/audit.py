"""The operation log's tables and service: append an entry in the caller's transaction, sign checkpoints, verify.

The pure chain (hashing, signatures, verification) lives in `openami.security.audit_chain`. `install_guards` makes
both tables append-only in the database itself; the lead's migration calls it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import BigInteger, Connection, Integer, String, Text, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from openami.common.clock import Clock, ensure_aware
from openami.common.errors import ConflictError, NotFoundError, ValidationError
from openami.security.audit_chain import (
    GENESIS_HASH,
    AuditEntryInfo,
    Checkpoint,
    VerifyReport,
    canonical_json,
    checkpoint_message,
    entry_hash,
    format_instant,
    verify_chain,
)
from openami.storage.append_only import install_append_only, remove_append_only
from openami.storage.base import Base, UTCDateTime

# Any constant the rest of openami does not use as an advisory lock key: "audit" in ASCII.
_APPEND_LOCK_KEY = 0x6175646974


class AuditEntry(Base):
    __tablename__ = "audit_entry"

    # Assigned as previous id + 1 under the append lock, not by a sequence: the id is hashed, a gap means a deletion,
    # and two appends that read the same last entry choose the same id, so the key refuses a fork.
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    site_id: Mapped[int | None] = mapped_column(Integer, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(40))
    address: Mapped[str | None] = mapped_column(String(45))  # the longest IPv6 text form is 45 characters
    action: Mapped[str] = mapped_column(String(100), index=True)
    object_type: Mapped[str] = mapped_column(String(60))
    object_id: Mapped[str] = mapped_column(String(100))
    # Canonical JSON kept as text, byte for byte: a JSON column type could reformat it and break the hash.
    before: Mapped[str | None] = mapped_column(Text)
    after: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditCheckpoint(Base):
    __tablename__ = "audit_checkpoint"

    id: Mapped[int] = mapped_column(primary_key=True)
    entry_id: Mapped[int] = mapped_column(BigInteger, index=True)
    entry_hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    public_key: Mapped[str] = mapped_column(String(64))  # Ed25519, 32 bytes as hex
    signature: Mapped[str] = mapped_column(String(128))  # Ed25519, 64 bytes as hex


_LIMITS = {"actor": 200, "role": 40, "address": 45, "action": 100, "object_type": 60, "object_id": 100}

_GUARDED = {
    "audit_entry": "audit entries are append-only",
    "audit_checkpoint": "audit checkpoints are append-only",
}


def install_guards(connection: Connection) -> None:
    """Make `audit_entry` and `audit_checkpoint` refuse UPDATE, DELETE (and TRUNCATE on PostgreSQL) by trigger."""
    install_append_only(connection, _GUARDED)


def remove_guards(connection: Connection) -> None:
    """Undo `install_guards` (for a migration's downgrade)."""
    remove_append_only(connection, _GUARDED)


def generate_signing_key() -> tuple[bytes, str]:
    """A new Ed25519 key: (private key as unencrypted PKCS#8 PEM, public key as hex)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem, public_key_hex(key)


def public_key_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def load_signing_key(pem: bytes, where: str = "key") -> Ed25519PrivateKey:
    """Read an Ed25519 private key from unencrypted PEM, or raise ValidationError saying what is wrong."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValidationError(f"not an unencrypted PEM private key ({exc})", where) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ValidationError(f"a {type(key).__name__} is not an Ed25519 key", where)
    return key


def checkpoint_to_dict(cp: Checkpoint) -> dict[str, Any]:
    """A checkpoint as JSON-ready values (the export format)."""
    return {
        "id": cp.id,
        "entry_id": cp.entry_id,
        "entry_hash": cp.entry_hash,
        "at": format_instant(cp.at),
        "public_key": cp.public_key,
        "signature": cp.signature,
    }


def checkpoint_from_dict(data: Any, where: str) -> Checkpoint:
    """Read back one exported checkpoint, or raise ValidationError naming `where` and the field."""
    if not isinstance(data, Mapping):
        raise ValidationError("a checkpoint must be a JSON object", where)

    def field(name: str, kind: type) -> Any:
        value = data.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            expected = "an integer" if kind is int else "a string"
            raise ValidationError(f"{name} must be {expected}, got {value!r}", where)
        return value

    cp_id = data.get("id")
    if cp_id is not None:
        cp_id = field("id", int)
    entry_id, entry_hash_hex = field("entry_id", int), field("entry_hash", str)
    try:
        at = ensure_aware(datetime.fromisoformat(field("at", str)), "at")
    except ValueError as exc:
        raise ValidationError(f"at: {exc}", where) from exc
    return Checkpoint(
        id=cp_id,
        entry_id=entry_id,
        entry_hash=entry_hash_hex,
        at=at,
        public_key=field("public_key", str),
        signature=field("signature", str),
    )


def _entry_info(row: AuditEntry) -> AuditEntryInfo:
    return AuditEntryInfo(
        id=row.id,
        at=row.at,
        site_id=row.site_id,
        actor=row.actor,
        role=row.role,
        address=row.address,
        action=row.action,
        object_type=row.object_type,
        object_id=row.object_id,
        before=row.before,
        after=row.after,
        reason=row.reason,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def _checkpoint_info(row: AuditCheckpoint) -> Checkpoint:
    return Checkpoint(row.id, row.entry_id, row.entry_hash, row.at, row.public_key, row.signature)


class AuditLog:
    """Appends to, signs and verifies the operation log. Never commits: the caller's transaction decides."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def append(
        self,
        session: Session,
        *,
        actor: str,
        role: str,
        action: str,
        object_type: str,
        object_id: str,
        before: Any = None,
        after: Any = None,
        reason: str | None = None,
        address: str | None = None,
        site_id: int | None = None,
    ) -> AuditEntryInfo:
        """Append one entry after the newest, in `session`'s transaction; `before`/`after` any JSON-able value.

        Raises ValidationError for an empty or too long field, a NUL character, a value with no JSON form, ConflictError when a
        concurrent append took the same place in the chain (the caller's transaction should be retried).
        """
        fields = {
            "actor": actor,
            "role": role,
            "action": action,
            "object_type": object_type,
            "object_id": object_id,
            "address": address,
        }
        for name, value in {**fields, "reason": reason}.items():
            if value is None and name in ("address", "reason"):
                continue
            if not isinstance(value, str) or not value.strip():
                raise ValidationError(f"must be a non-empty string, got {value!r}", f"audit entry {name}")
            if name in _LIMITS and len(value) > _LIMITS[name]:
                raise ValidationError(f"longer than {_LIMITS[name]} characters", f"audit entry {name}")
            if "\x00" in value:  # PostgreSQL text cannot hold it; refused here on SQLite too, so both agree
                raise ValidationError("contains a NUL character", f"audit entry {name}")
        try:
            before_json = None if before is None else canonical_json(before, "before")
            after_json = None if after is None else canonical_json(after, "after")
        except ValueError as exc:
            raise ValidationError(str(exc), "audit entry") from exc
        self._lock(session)
        last = session.execute(
            select(AuditEntry.id, AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)
        ).first()
        draft = AuditEntryInfo(
            id=last.id + 1 if last else 1,
            at=ensure_aware(self._clock.now(), "clock"),
            site_id=site_id,
            actor=actor,
            role=role,
            address=address,
            action=action,
            object_type=object_type,
            object_id=object_id,
            before=before_json,
            after=after_json,
            reason=reason,
            prev_hash=last.hash if last else GENESIS_HASH,
            hash="",
        )
        info = dataclasses.replace(draft, hash=entry_hash(draft))
        session.add(AuditEntry(**dataclasses.asdict(info)))
        try:
            session.flush()
        except IntegrityError as exc:
            raise ConflictError(
                f"another append took audit entry #{info.id} at the same time; retry the transaction"
            ) from exc
        return info

    def checkpoint(self, session: Session, private_key: Ed25519PrivateKey | bytes) -> Checkpoint:
        """Sign the newest entry (its id, hash and now) with `private_key` (Ed25519, or its PEM) and store it."""
        key = private_key if isinstance(private_key, Ed25519PrivateKey) else load_signing_key(private_key)
        self._lock(session)
        last = session.execute(
            select(AuditEntry.id, AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)
        ).first()
        if last is None:
            raise NotFoundError("the audit log is empty: there is no entry to checkpoint")
        at = ensure_aware(self._clock.now(), "clock")
        row = AuditCheckpoint(
            entry_id=last.id,
            entry_hash=last.hash,
            at=at,
            public_key=public_key_hex(key),
            signature=key.sign(checkpoint_message(last.id, last.hash, at)).hex(),
        )
        session.add(row)
        session.flush()
        return _checkpoint_info(row)

    def entries(self, session: Session) -> list[AuditEntryInfo]:
        """Every entry, in id order."""
        rows = session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars()
        return [_entry_info(r) for r in rows]

    def checkpoints(self, session: Session) -> list[Checkpoint]:
        rows = session.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.id)).scalars()
        return [_checkpoint_info(r) for r in rows]

    def export_checkpoints(self, session: Session) -> list[dict[str, Any]]:
        """Every stored checkpoint as JSON-ready dicts, oldest first, to keep outside the database."""
        return [checkpoint_to_dict(cp) for cp in self.checkpoints(session)]

    def verify(
        self,
        session: Session,
        public_keys: Collection[str] | None = None,
        extra_checkpoints: Sequence[Checkpoint] = (),
    ) -> VerifyReport:
        """Verify the stored chain against the stored checkpoints and `extra_checkpoints` (an exported copy).

        With no `public_keys`, the keys named by `extra_checkpoints` are trusted, or failing those the keys stored
        beside the checkpoints in the database (which then only shows the log agrees with itself).
        """
        stored = self.checkpoints(session)
        checkpoints = [*stored, *extra_checkpoints]
        if public_keys is None:
            anchor = extra_checkpoints or stored
            public_keys = {cp.public_key for cp in anchor}
        return verify_chain(self.entries(session), checkpoints, public_keys)

    @staticmethod
    def _lock(session: Session) -> None:
        # Held to the end of the caller's transaction, so appends and checkpoints take turns on PostgreSQL. SQLite
        # allows one writer at a time, and the primary key (previous id + 1) refuses a fork on both.
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _APPEND_LOCK_KEY})


def decode_json(value: str | None) -> Any:
    """An entry's stored `before`/`after` text back as Python values (Decimal and datetime come back as strings)."""
    return None if value is None else json.loads(value)
