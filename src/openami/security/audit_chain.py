"""The operation log's hash chain: canonical serialisation, entry hashes, checkpoint signatures and verification.

Pure: no session, clock or I/O. Instants are passed in.

Each entry's `hash` is SHA-256 (64 hex digits) over the canonical serialisation of every other field, including
`prev_hash`, the hash of the entry before it (`GENESIS_HASH` for the first). The entry's `id` is hashed too: ids are
handed out as previous id + 1 under the append lock (never by a sequence, which leaves gaps when a transaction rolls
back), so a gap always means a deletion, and renumbering rows to hide one changes their hashes.

A checkpoint is an Ed25519 signature over (entry id, entry hash, instant). Kept outside the database (exported), the
newest checkpoint reveals a cut-off tail, which no hash chain can show on its own.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS_HASH = "0" * 64
"""The `prev_hash` of the first entry."""

ENTRY_FORMAT = "openami-audit-entry-v1"
CHECKPOINT_FORMAT = "openami-audit-checkpoint-v1"


@dataclass(frozen=True)
class AuditEntryInfo:
    """One operation-log entry as stored. `before`/`after` are canonical JSON text (or None); `at` is aware UTC."""

    id: int
    at: datetime
    site_id: int | None
    actor: str
    role: str
    address: str | None
    action: str
    object_type: str
    object_id: str
    before: str | None
    after: str | None
    reason: str | None
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that entry `entry_id` had hash `entry_hash` at instant `at` (aware UTC).

    `public_key` and `signature` are hex (32 and 64 bytes). `id` is the checkpoint's row id, None when unsaved.
    """

    id: int | None
    entry_id: int
    entry_hash: str
    at: datetime
    public_key: str
    signature: str


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of `verify_chain`.

    `checked` counts the entries found good before the first bad one (all of them when `ok`). `first_bad_id` names
    the first entry that was edited, deleted, inserted or moved (None when the chain is intact or only a checkpoint
    itself is at fault); `problem` says what is wrong. `last_checkpoint` is the newest checkpoint that verified.
    """

    ok: bool
    checked: int
    first_bad_id: int | None
    problem: str | None
    last_checkpoint: Checkpoint | None


def _canonical_value(value: Any, where: str) -> Any:
    """Turn `value` into plain JSON types the same way every time, or raise ValueError naming `where`."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} has no JSON form")
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{where}: {value!r} has no JSON form")
        # A string keeps every digit and the scale ("1.50" stays "1.50"), which a float would not.
        return str(value)
    if isinstance(value, datetime):
        return format_instant(value, where)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return _canonical_value(value.value, where)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {key!r} is not a string")
            out[key] = _canonical_value(item, f"{where}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_canonical_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise ValueError(f"{where}: a {type(value).__name__} is not JSON-serialisable")


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_json(value: Any, where: str = "value") -> str:
    """Sorted-key compact JSON of `value`: Decimal as its string, datetime as UTC ISO-8601, enum as its value.

    Raises ValueError naming `where` for what has no single JSON form (naive datetime, NaN, set, non-string key).
    """
    return _dumps(_canonical_value(value, where))


def format_instant(at: datetime, where: str = "at") -> str:
    """`at` as fixed-width ISO-8601 UTC with microseconds, e.g. "2026-03-02T00:00:00.000000Z"."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{where}: naive datetime {at.isoformat()} (instants must be timezone-aware)")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(entry: AuditEntryInfo) -> str:
    """SHA-256 hex over the canonical serialisation of every field of `entry` except `hash`."""
    material = {
        "format": ENTRY_FORMAT,
        "id": entry.id,
        "at": format_instant(entry.at),
        "site_id": entry.site_id,
        "actor": entry.actor,
        "role": entry.role,
        "address": entry.address,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "before": entry.before,
        "after": entry.after,
        "reason": entry.reason,
        "prev_hash": entry.prev_hash,
    }
    return hashlib.sha256(_dumps(material).encode("utf-8")).hexdigest()


def checkpoint_message(entry_id: int, entry_hash_hex: str, at: datetime) -> bytes:
    """The bytes a checkpoint signs."""
    return _dumps(
        {
            "format": CHECKPOINT_FORMAT,
            "entry_id": entry_id,
            "entry_hash": entry_hash_hex,
            "at": format_instant(at),
        }
    ).encode("utf-8")


def checkpoint_signature_valid(checkpoint: Checkpoint) -> bool:
    """True when `checkpoint.signature` is its `public_key`'s Ed25519 signature of its message."""
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(checkpoint.public_key))
        key.verify(
            bytes.fromhex(checkpoint.signature),
            checkpoint_message(checkpoint.entry_id, checkpoint.entry_hash, checkpoint.at),
        )
    except (ValueError, InvalidSignature):
        return False
    return True


@dataclass(frozen=True)
class _Problem:
    first_bad_id: int
    problem: str


def _walk_chain(entries: Sequence[AuditEntryInfo]) -> _Problem | None:
    """The first entry (in the given order, which must be id order) that breaks the chain, and why."""
    owner_of_hash = {e.hash: e for e in entries}
    ids = {e.id for e in entries}
    expected_id = 1
    expected_prev = GENESIS_HASH
    for e in entries:
        if e.id > expected_id:
            if expected_id in ids:
                return _Problem(
                    expected_id, f"entries out of order: #{e.id} stands where #{expected_id} belongs"
                )
            missing = f"#{expected_id}" if e.id == expected_id + 1 else f"#{expected_id}..#{e.id - 1}"
            return _Problem(
                expected_id, f"entry {missing} is missing (deleted): #{e.id} follows #{expected_id - 1}"
            )
        if e.id < expected_id:
            return _Problem(e.id, f"entries out of order: #{e.id} appears again after #{expected_id - 1}")
        own_ok = entry_hash(e) == e.hash
        if e.prev_hash != expected_prev:
            pointed = owner_of_hash.get(e.prev_hash)
            if pointed is not None and pointed.id >= e.id:
                return _Problem(
                    e.id,
                    f"entries reordered: #{e.id} holds the entry that followed the one now at #{pointed.id}",
                )
            if pointed is not None and pointed.id < e.id - 1:
                return _Problem(
                    pointed.id + 1,
                    f"entry #{pointed.id + 1} was inserted: the entry now at #{e.id} followed #{pointed.id}",
                )
            if e.id == 1:
                return _Problem(
                    1, "entry #1 does not start from the genesis hash (edited, or the head was cut)"
                )
            if own_ok:
                return _Problem(
                    e.id - 1,
                    f"entry #{e.id - 1} was rewritten: its hash is not the prev_hash recorded by #{e.id}",
                )
            return _Problem(
                e.id,
                f"entry #{e.id} was edited, or an entry before it was deleted and the rest renumbered: "
                "its hash does not match its contents and its prev_hash names no entry",
            )
        if not own_ok:
            return _Problem(e.id, f"entry #{e.id} was edited: its stored hash does not match its contents")
        expected_id = e.id + 1
        expected_prev = e.hash
    return None


def _compare_checkpoints(
    entries: Sequence[AuditEntryInfo], checkpoints: Sequence[Checkpoint], before_id: int | None
) -> _Problem | None:
    """The first entry a (trusted, valid) checkpoint shows to be cut off or rewritten; entries up to `before_id`."""
    by_id = {e.id: e for e in entries}
    last_id = max(by_id, default=0)
    last_matching = 0
    for cp in sorted(checkpoints, key=lambda c: c.entry_id):
        if before_id is not None and cp.entry_id >= before_id:
            break
        entry = by_id.get(cp.entry_id)
        signed = f"checkpoint signed {format_instant(cp.at)} names entry #{cp.entry_id}"
        if entry is None:
            first = last_id + 1 if cp.entry_id > last_id else cp.entry_id
            return _Problem(
                first, f"entries #{first}..#{cp.entry_id} are missing (tail cut off): the {signed}"
            )
        if entry.hash != cp.entry_hash:
            first = last_matching + 1
            return _Problem(
                first,
                f"history from #{first} to #{cp.entry_id} was rewritten: the {signed} with another hash",
            )
        last_matching = cp.entry_id
    return None


def verify_chain(
    entries: Sequence[AuditEntryInfo], checkpoints: Sequence[Checkpoint], public_keys: Collection[str]
) -> VerifyReport:
    """Check `entries` (in id order) form an unbroken chain from genesis and agree with every checkpoint.

    `public_keys` are the trusted Ed25519 keys (hex); a checkpoint signed by another key, or with a bad signature,
    is itself a problem. Names the first bad entry: an edited one (hash mismatch), a deleted one (id gap), an
    inserted one, one out of order, or the first of a cut-off tail (the newest checkpoint names a missing entry).
    """
    trusted = {k.lower() for k in public_keys}
    good: list[Checkpoint] = []
    checkpoint_problem: str | None = None
    seen: set[tuple[int, str, str]] = set()
    for cp in sorted(checkpoints, key=lambda c: (c.entry_id, c.at)):
        if (cp.entry_id, cp.entry_hash, cp.signature) in seen:
            continue
        seen.add((cp.entry_id, cp.entry_hash, cp.signature))
        label = f"checkpoint {'#' + str(cp.id) + ' ' if cp.id is not None else ''}for entry #{cp.entry_id}"
        if cp.public_key.lower() not in trusted:
            checkpoint_problem = (
                checkpoint_problem or f"{label} is signed by an untrusted key {cp.public_key}"
            )
        elif not checkpoint_signature_valid(cp):
            checkpoint_problem = checkpoint_problem or f"{label} has an invalid signature"
        else:
            good.append(cp)
    chain = _walk_chain(entries)
    against = _compare_checkpoints(entries, good, chain.first_bad_id if chain else None)
    found = [p for p in (chain, against) if p is not None]
    last = max(good, key=lambda c: (c.entry_id, c.at), default=None)
    if found:
        worst = min(found, key=lambda p: p.first_bad_id)
        checked = sum(1 for e in entries if e.id < worst.first_bad_id)
        return VerifyReport(False, checked, worst.first_bad_id, worst.problem, last)
    if checkpoint_problem is not None:
        return VerifyReport(False, len(entries), None, checkpoint_problem, last)
    return VerifyReport(True, len(entries), None, None, last)
