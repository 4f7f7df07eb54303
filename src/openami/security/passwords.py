"""Password hashing (argon2id, RFC 9106) and the password policy. No session, clock or I/O.

Passwords are NFKC-normalised before hashing, so the same password typed on two keyboards that compose accents
differently still matches.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from openami.common.errors import ValidationError

PASSWORD_MIN_CHARS = 12
# Argon2 accepts any length, but hashing a megabyte-long "password" is a cheap denial of service.
PASSWORD_MAX_CHARS = 1024
PASSWORD_MIN_CLASSES = 2


@dataclass(frozen=True, slots=True)
class Argon2Cost:
    """Argon2id parameters: passes over memory, memory in KiB, lanes."""

    time_cost: int
    memory_kib: int
    parallelism: int


# RFC 9106 section 4, second recommended option (t=3, m=64 MiB, p=4): about 100 ms per hash on the 2-core
# development machine, inside the 50-250 ms budget for a login.
DEFAULT_COST = Argon2Cost(time_cost=3, memory_kib=64 * 1024, parallelism=4)


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    """The outcome of `verify_password`: whether it matched, and whether the stored hash should be replaced."""

    matches: bool
    needs_rehash: bool


def _hasher(cost: Argon2Cost) -> PasswordHasher:
    return PasswordHasher(
        time_cost=cost.time_cost,
        memory_cost=cost.memory_kib,
        parallelism=cost.parallelism,
        type=Type.ID,
    )


def _normalise(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


def _character_classes(password: str) -> set[str]:
    classes = set()
    for char in password:
        if char.isdigit():
            classes.add("digits")
        elif char.islower():
            classes.add("lower-case letters")
        elif char.isupper():
            classes.add("upper-case letters")
        else:  # symbols, spaces and letters of scripts without case
            classes.add("other characters")
    return classes


def password_policy_problems(password: str, username: str | None = None) -> list[str]:
    """Every rule `password` breaks, in words; empty when it is acceptable."""
    password = _normalise(password)
    problems = []
    if len(password) < PASSWORD_MIN_CHARS:
        problems.append(f"must be at least {PASSWORD_MIN_CHARS} characters long, got {len(password)}")
    if len(password) > PASSWORD_MAX_CHARS:
        problems.append(f"must be at most {PASSWORD_MAX_CHARS} characters long, got {len(password)}")
    if any(unicodedata.category(char) == "Cc" for char in password):
        problems.append("must not contain control characters (NUL, tab, newline ...)")
    classes = _character_classes(password)
    if password and len(classes) < PASSWORD_MIN_CLASSES:
        problems.append(
            f"uses only {next(iter(classes))}: mix at least {PASSWORD_MIN_CLASSES} of lower-case letters, "
            "upper-case letters, digits and other characters"
        )
    if username and len(username) >= 3 and username.casefold() in password.casefold():
        problems.append("must not contain the username")
    return problems


def check_password_policy(password: str, username: str | None = None) -> None:
    """Raise ValidationError at "password" naming every rule `password` breaks."""
    problems = password_policy_problems(password, username)
    if problems:
        raise ValidationError("; ".join(problems), "password")


def hash_password(password: str, cost: Argon2Cost = DEFAULT_COST) -> str:
    """The argon2id hash of `password` in PHC string form (salt and parameters included). Applies no policy."""
    return _hasher(cost).hash(_normalise(password))


def verify_password(stored_hash: str, password: str, cost: Argon2Cost = DEFAULT_COST) -> PasswordCheck:
    """Whether `password` matches `stored_hash`, and whether the hash was made with other parameters than `cost`.

    Raises ValidationError when `stored_hash` is not an argon2 hash at all (a damaged row, not a wrong password).
    """
    hasher = _hasher(cost)
    try:
        hasher.verify(stored_hash, _normalise(password))
    except VerifyMismatchError:
        return PasswordCheck(matches=False, needs_rehash=False)
    except InvalidHashError as exc:
        raise ValidationError("the stored value is not an argon2 hash", "password_hash") from exc
    except VerificationError as exc:  # shaped like an argon2 hash, but its salt or digest cannot be decoded
        raise ValidationError(f"the stored argon2 hash is damaged ({exc})", "password_hash") from exc
    return PasswordCheck(matches=True, needs_rehash=hasher.check_needs_rehash(stored_hash))
