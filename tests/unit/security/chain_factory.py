"""Builds valid audit chains and signed checkpoints in memory, and the tampers an attacker would try on them."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from openami.security.audit import public_key_hex
from openami.security.audit_chain import (
    GENESIS_HASH,
    AuditEntryInfo,
    Checkpoint,
    canonical_json,
    checkpoint_message,
    entry_hash,
)

START = datetime(2026, 3, 2, tzinfo=UTC)
# Fixed key material: the tests need a key, not a secret.
SIGNING_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC_KEY = public_key_hex(SIGNING_KEY)
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def sealed(entry: AuditEntryInfo) -> AuditEntryInfo:
    """`entry` with its hash recomputed, as the service (or an attacker who knows the algorithm) would."""
    return dataclasses.replace(entry, hash=entry_hash(entry))


def make_chain(n: int) -> list[AuditEntryInfo]:
    entries: list[AuditEntryInfo] = []
    prev = GENESIS_HASH
    for i in range(1, n + 1):
        entry = sealed(
            AuditEntryInfo(
                id=i,
                at=START + timedelta(minutes=i),
                site_id=1 + i % 2,
                actor=f"user{i % 3}",
                role="operator",
                address="192.0.2.7",
                action="registry.meter.update",
                object_type="meter",
                object_id=f"M{i:04d}",
                before=canonical_json({"status": "active", "n": i}),
                after=canonical_json({"status": "disconnected", "n": i}),
                reason="unpaid" if i % 2 else None,
                prev_hash=prev,
                hash="",
            )
        )
        entries.append(entry)
        prev = entry.hash
    return entries


def sign(entry: AuditEntryInfo, key: Ed25519PrivateKey = SIGNING_KEY, cp_id: int | None = None) -> Checkpoint:
    at = entry.at + timedelta(seconds=1)
    return Checkpoint(
        id=cp_id,
        entry_id=entry.id,
        entry_hash=entry.hash,
        at=at,
        public_key=public_key_hex(key),
        signature=key.sign(checkpoint_message(entry.id, entry.hash, at)).hex(),
    )


def swap_contents(entries: list[AuditEntryInfo], i: int, j: int) -> list[AuditEntryInfo]:
    """Rows at positions i and j exchange everything but their ids (a reorder done with UPDATE)."""
    out = list(entries)
    out[i] = dataclasses.replace(entries[j], id=entries[i].id)
    out[j] = dataclasses.replace(entries[i], id=entries[j].id)
    return out


def insert_forged(entries: list[AuditEntryInfo], position: int) -> list[AuditEntryInfo]:
    """Shift ids from `position` up by one and put a self-consistent forged entry in the freed place."""
    prev = entries[position - 1].hash if position else GENESIS_HASH
    forged = sealed(
        dataclasses.replace(
            entries[position], id=position + 1, action="billing.payment.create", prev_hash=prev, hash=""
        )
    )
    shifted = [dataclasses.replace(e, id=e.id + 1) for e in entries[position:]]
    return [*entries[:position], forged, *shifted]
