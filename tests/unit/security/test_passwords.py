"""Argon2id hashing and the password policy."""

from __future__ import annotations

import unicodedata

import pytest

from openami.common.errors import ValidationError
from openami.security.passwords import (
    DEFAULT_COST,
    Argon2Cost,
    PasswordCheck,
    check_password_policy,
    hash_password,
    password_policy_problems,
    verify_password,
)

CHEAP = Argon2Cost(time_cost=1, memory_kib=8, parallelism=1)
GOOD = "correct horse battery 9"


def test_a_hash_verifies_its_password_and_no_other() -> None:
    stored = hash_password(GOOD, CHEAP)
    assert stored.startswith("$argon2id$")
    assert GOOD not in stored
    assert verify_password(stored, GOOD, CHEAP).matches
    assert not verify_password(stored, GOOD + "!", CHEAP).matches


def test_two_hashes_of_one_password_differ_by_their_salt() -> None:
    assert hash_password(GOOD, CHEAP) != hash_password(GOOD, CHEAP)


def test_default_cost_is_rfc_9106_low_memory() -> None:
    assert Argon2Cost(time_cost=3, memory_kib=65536, parallelism=4) == DEFAULT_COST
    stored = hash_password(GOOD)
    assert "$m=65536,t=3,p=4$" in stored
    check = verify_password(stored, GOOD)
    assert check.matches
    assert not check.needs_rehash


def test_a_hash_made_at_another_cost_needs_a_rehash_once_it_matches() -> None:
    stored = hash_password(GOOD, CHEAP)
    stronger = Argon2Cost(time_cost=2, memory_kib=16, parallelism=1)
    assert verify_password(stored, GOOD, stronger).needs_rehash
    assert not verify_password(stored, GOOD, CHEAP).needs_rehash
    # A wrong password says nothing about the stored hash's parameters.
    assert verify_password(stored, "wrong password 1", stronger) == PasswordCheck(
        matches=False, needs_rehash=False
    )


def test_composed_and_decomposed_accents_are_the_same_password() -> None:
    composed = "Café au lait 42"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert verify_password(hash_password(composed, CHEAP), decomposed, CHEAP).matches


@pytest.mark.parametrize(
    ("stored", "words"),
    [("not a hash", "not an argon2 hash"), ("", "not an argon2 hash"), (None, "damaged")],
)
def test_a_damaged_stored_hash_is_an_error_not_a_mismatch(stored: str | None, words: str) -> None:
    if stored is None:
        stored = hash_password(GOOD, CHEAP)[:-1] + "*"  # not a base64 character
    with pytest.raises(ValidationError, match=words) as caught:
        verify_password(stored, GOOD, CHEAP)
    assert caught.value.location == "password_hash"


def test_a_reasonable_password_passes_the_policy() -> None:
    assert password_policy_problems(GOOD, "alice") == []
    check_password_policy("Tr0ub4dor&3xyz")
    check_password_policy("日本語のパスワードです12")


@pytest.mark.parametrize(
    ("password", "words"),
    [
        ("Short1!", "at least 12 characters long, got 7"),
        ("abcdefghijklmnop", "uses only lower-case letters"),
        ("123456789012", "uses only digits"),
        ("ABCDEFGHIJKLM", "uses only upper-case letters"),
        ("my alice password 1", "must not contain the username"),
        ("MyAlicePassword1", "must not contain the username"),
        ("tab\there in it 12", "control characters"),
        ("a1" * 513, "at most 1024 characters long, got 1026"),
    ],
)
def test_the_policy_names_what_is_wrong(password: str, words: str) -> None:
    with pytest.raises(ValidationError, match=words) as caught:
        check_password_policy(password, "alice")
    assert caught.value.location == "password"


def test_every_broken_rule_is_named_at_once() -> None:
    problems = password_policy_problems("alice", "alice")
    assert len(problems) == 3
    assert any("12 characters" in p for p in problems)
    assert any("lower-case" in p for p in problems)
    assert any("username" in p for p in problems)


def test_an_empty_password_is_refused_for_its_length() -> None:
    assert password_policy_problems("") == ["must be at least 12 characters long, got 0"]
