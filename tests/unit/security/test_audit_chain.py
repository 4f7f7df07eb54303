"""The pure hash chain: canonical form, and every kind of tampering named at the right entry."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openami.security.audit_chain import (
    GENESIS_HASH,
    AuditEntryInfo,
    canonical_json,
    checkpoint_signature_valid,
    entry_hash,
    verify_chain,
)
from tests.unit.security.chain_factory import (
    OTHER_KEY,
    PUBLIC_KEY,
    insert_forged,
    make_chain,
    sealed,
    sign,
    swap_contents,
)


def test_canonical_json_is_sorted_compact_and_exact() -> None:
    value = {"b": Decimal("1.50"), "a": datetime(2026, 3, 2, 3, 0, tzinfo=timezone(timedelta(hours=3)))}
    assert canonical_json(value) == '{"a":"2026-03-02T00:00:00.000000Z","b":"1.50"}'
    assert canonical_json([1, "é", None, True, (2, 3)]) == '[1,"é",null,true,[2,3]]'


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({"at": datetime(2026, 3, 2)}, "value.at: naive datetime"),  # noqa: DTZ001  (the naive instant under test)
        ({"x": [float("nan")]}, "value.x[0]"),
        ({"x": Decimal("Infinity")}, "value.x"),
        ({1: "a"}, "key 1 is not a string"),
        ({"s": {1, 2}}, "a set is not JSON-serialisable"),
    ],
)
def test_canonical_json_refuses_what_has_no_single_json_form(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        canonical_json(value)


def test_hash_covers_every_field_and_the_id() -> None:
    entry = make_chain(1)[0]
    for field in dataclasses.fields(AuditEntryInfo):
        if field.name == "hash":
            continue
        current = getattr(entry, field.name)
        changed = {
            int: 7 if current != 7 else 8,
            str: f"{current}x" if current else "x",
            datetime: entry.at + timedelta(microseconds=1),
        }[type(current) if current is not None else str]
        changes: dict[str, Any] = {field.name: changed}
        assert entry_hash(dataclasses.replace(entry, **changes)) != entry.hash, field.name


def test_an_intact_chain_verifies_with_its_checkpoint() -> None:
    entries = make_chain(5)
    assert entries[0].prev_hash == GENESIS_HASH
    cp = sign(entries[3], cp_id=1)
    report = verify_chain(entries, [cp], [PUBLIC_KEY])
    assert (report.ok, report.checked, report.first_bad_id, report.problem) == (True, 5, None, None)
    assert report.last_checkpoint == cp
    assert verify_chain([], [], []).ok


def _first_bad(
    entries: list[AuditEntryInfo], with_checkpoint_of: list[AuditEntryInfo] | None = None
) -> int | None:
    checkpoints = [sign(with_checkpoint_of[-1])] if with_checkpoint_of else []
    report = verify_chain(entries, checkpoints, [PUBLIC_KEY])
    assert report.ok is (report.first_bad_id is None and report.problem is None)
    return report.first_bad_id


def test_an_edited_entry_is_named() -> None:
    entries = make_chain(8)
    entries[4] = dataclasses.replace(entries[4], after='{"status":"active"}')
    report = verify_chain(entries, [], [PUBLIC_KEY])
    assert (report.first_bad_id, report.checked) == (5, 4)
    assert report.problem == "entry #5 was edited: its stored hash does not match its contents"


def test_an_edit_with_its_hash_recomputed_is_named() -> None:
    entries = make_chain(8)
    entries[4] = sealed(dataclasses.replace(entries[4], actor="mallory"))
    assert _first_bad(entries) == 5


def test_a_deleted_entry_is_named() -> None:
    entries = make_chain(8)
    report = verify_chain(entries[:4] + entries[5:], [], [])
    assert report.first_bad_id == 5
    assert report.problem == "entry #5 is missing (deleted): #6 follows #4"
    assert _first_bad(entries[1:]) == 1


def test_a_deletion_hidden_by_renumbering_is_named() -> None:
    entries = make_chain(8)
    renumbered = entries[:4] + [dataclasses.replace(e, id=e.id - 1) for e in entries[5:]]
    assert _first_bad(renumbered) == 5


def test_an_inserted_entry_is_named() -> None:
    entries = make_chain(8)
    report = verify_chain(insert_forged(entries, 4), [], [])
    assert report.first_bad_id == 5
    assert report.problem is not None
    assert "inserted" in report.problem


def test_reordered_entries_are_named() -> None:
    entries = make_chain(8)
    for j, predecessor in ((3, 4), (6, 6)):
        report = verify_chain(swap_contents(entries, 2, j), [], [])
        assert (report.first_bad_id, report.problem) == (
            3,
            f"entries reordered: #3 holds the entry that followed the one now at #{predecessor}",
        )
    moved = list(entries)
    moved[2], moved[6] = moved[6], moved[2]
    report = verify_chain(moved, [], [])
    assert (report.first_bad_id, report.problem) == (3, "entries out of order: #7 stands where #3 belongs")


def test_a_cut_tail_is_named_by_the_newest_checkpoint() -> None:
    entries = make_chain(10)
    cut = entries[:7]
    assert verify_chain(cut, [], []).ok  # without a checkpoint a cut tail looks like a shorter log
    report = verify_chain(cut, [sign(entries[4]), sign(entries[9])], [PUBLIC_KEY])
    assert report.first_bad_id == 8
    assert report.problem is not None
    assert report.problem.startswith("entries #8..#10 are missing (tail cut off)")
    assert _first_bad([], entries) == 1


def test_a_history_rewritten_consistently_is_caught_after_the_last_matching_checkpoint() -> None:
    entries = make_chain(10)
    rewritten = entries[:6]
    for original in entries[6:]:
        rewritten.append(sealed(dataclasses.replace(original, reason="forged", prev_hash=rewritten[-1].hash)))
    assert verify_chain(rewritten, [], []).ok
    report = verify_chain(rewritten, [sign(entries[4]), sign(entries[9])], [PUBLIC_KEY])
    assert report.first_bad_id == 6
    assert report.problem is not None
    assert "history from #6 to #10 was rewritten" in report.problem


def test_a_checkpoint_with_a_bad_signature_or_an_untrusted_key_fails() -> None:
    entries = make_chain(3)
    forged = dataclasses.replace(sign(entries[2]), entry_hash="ab" * 32)
    assert not checkpoint_signature_valid(forged)
    report = verify_chain(entries, [forged], [PUBLIC_KEY])
    assert (report.ok, report.first_bad_id, report.problem) == (
        False,
        None,
        "checkpoint for entry #3 has an invalid signature",
    )
    foreign = sign(entries[2], key=OTHER_KEY, cp_id=4)
    report = verify_chain(entries, [foreign], [PUBLIC_KEY])
    assert not report.ok
    assert report.problem is not None
    assert report.problem.startswith("checkpoint #4 for entry #3 is signed by an untrusted key")


_FIELDS = [
    "at",
    "site_id",
    "actor",
    "role",
    "address",
    "action",
    "object_id",
    "before",
    "after",
    "reason",
    "prev_hash",
    "hash",
]


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=25),
    kind=st.sampled_from(["edit", "delete", "swap_rows", "swap_contents"]),
    data=st.data(),
)
def test_any_single_tamper_is_named_at_the_right_entry(n: int, kind: str, data: st.DataObject) -> None:
    entries = make_chain(n)
    k = data.draw(st.integers(min_value=0, max_value=n - 1), label="position")
    if kind == "edit":
        name = data.draw(st.sampled_from(_FIELDS), label="field")
        current = getattr(entries[k], name)
        new = {
            "at": entries[k].at + timedelta(seconds=1),
            "site_id": 99,
            "prev_hash": "f" * 64,
            "hash": "e" * 64,
        }.get(name, f"{current}!")
        tampered = list(entries)
        edits: dict[str, Any] = {name: new}
        tampered[k] = dataclasses.replace(entries[k], **edits)
        expected = k + 1
    elif kind == "delete":
        tampered = entries[:k] + entries[k + 1 :]
        expected = k + 1
    else:
        if n < 2:
            return
        j = data.draw(st.integers(min_value=0, max_value=n - 1).filter(lambda j: j != k), label="other")
        i, j = min(k, j), max(k, j)
        if kind == "swap_contents":
            tampered = swap_contents(entries, i, j)
        else:
            tampered = list(entries)
            tampered[i], tampered[j] = tampered[j], tampered[i]
        expected = i + 1
    report = verify_chain(tampered, [sign(entries[-1])], [PUBLIC_KEY])
    assert not report.ok
    assert report.first_bad_id == expected, report.problem


def test_entries_are_checked_as_given_not_sorted() -> None:
    entries = make_chain(3)
    report = verify_chain([entries[0], entries[2], entries[1]], [], [])
    assert report.first_bad_id == 2


def test_instants_are_hashed_in_utc() -> None:
    entry = make_chain(1)[0]
    elsewhere = dataclasses.replace(entry, at=entry.at.astimezone(timezone(timedelta(hours=-5))))
    assert entry_hash(elsewhere) == entry.hash
    assert entry.at.tzinfo is UTC
