"""The meter's keypad for OpenPAYGo tokens: accepts each genuine token once and keeps the prepaid register.

A meter without a live link gets credit as a 9-digit OpenPAYGo token (standard tokens, full digit set), typed on
its keypad. Each token carries a count (the meter's and the issuer's shared counter), a type and a value of
0..995 *token units*. What a unit is comes from the meter's provisioning (`TokenConfig`): `unit_size` Wh of
energy, or `unit_size` minor units of money, so the prepaid register `credit` is in Wh or in minor units.

What each token type does here:
- add (OpenPAYGo ADD_TIME, even counts): `value * unit_size` is added to the credit;
- set (SET_TIME, odd counts): the credit becomes `value * unit_size`, and prepayment is enabled again;
- disable (DISABLE_PAYG): prepayment is off (the supply no longer depends on credit) until a set token;
- counter sync (COUNTER_SYNC): only moves the count (openami does not issue it, but a genuine one is accepted).

Once only, as OpenPAYGo defines it (`openpaygo.OpenPAYGOTokenDecoder`): a token with a count above the highest
count seen is accepted; an add token up to `MAX_UNUSED_OLDER_TOKENS` (16) counts below it is accepted once if
its count was never used, so tokens typed out of order are not lost; anything older, any count already used,
and any older token after a set or disable token (those mark the whole window as used) is refused as already
used. The decoder looks only `MAX_TOKEN_JUMP` (64) counts ahead, so a token issued more than 64 counts after
the last one the meter saw is refused as invalid (issue a counter sync, or re-issue).

Garbage (not 9 digits), a token made with another meter's key or starting code, and a mistyped token are
refused as invalid. After each invalid token the keypad is locked for 2**n minutes (n invalid tokens in a row,
at most `MAX_LOCKOUT`), as the OpenPAYGo reference device does, so the 9 digits cannot be guessed by trying;
an accepted token resets n.

Every token entered, accepted or refused, goes to the token log (a bounded log numbered like the event log,
stamped by the meter's clock). The token digits themselves are not logged: the count identifies the token.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice

from openpaygo import OpenPAYGOTokenDecoder, TokenType  # type: ignore[import-untyped]

from openami.common.clock import ensure_aware

SECRET_KEY_BYTES = 16  # OpenPAYGo's SipHash-2-4 key
MAX_STARTING_CODE = 999_999_999  # a starting code is a 9-digit number
MAX_TOKEN_VALUE = 995  # OpenPAYGo's MAX_ACTIVATION_VALUE for standard tokens, in token units
MAX_UNUSED_OLDER_TOKENS: int = OpenPAYGOTokenDecoder.MAX_UNUSED_OLDER_TOKENS
MAX_TOKEN_JUMP: int = OpenPAYGOTokenDecoder.MAX_TOKEN_JUMP
STARTING_COUNT = 1  # issuer and meter both start here (OpenPAYGo's convention); the first token has count 2
MAX_LOCKOUT = timedelta(hours=24)
DEFAULT_TOKEN_LOG_CAPACITY = 500
_PAYG_DISABLE_VALUE = 998
_COUNTER_SYNC_VALUE = 999
_TOKEN = re.compile(r"[0-9]{9}")


class CreditKind(enum.StrEnum):
    """What the prepaid register counts: Wh of energy, or minor units of the site's currency."""

    ENERGY = "energy"
    MONEY = "money"


class TokenKind(enum.StrEnum):
    ADD = "add"
    SET = "set"
    DISABLE = "disable"
    COUNTER_SYNC = "counter_sync"


class RejectReason(enum.StrEnum):
    """Why the meter refused a token; short stable codes."""

    MALFORMED = "malformed"  # not exactly 9 digits
    INVALID = "invalid"  # not made for this meter (key, starting code), mistyped, or too far ahead
    ALREADY_USED = "already_used"  # a replay, or older than the used-counts window
    LOCKED_OUT = "locked_out"  # entered while the keypad is locked after invalid tokens


@dataclass(frozen=True, slots=True)
class TokenConfig:
    """What the meter is provisioned with (from the platform's `TokenService.provision_meter`)."""

    secret_key: bytes = field(repr=False)  # 16 bytes, OpenPAYGo's key; never in repr
    starting_code: int
    credit_kind: CreditKind
    unit_size: int  # Wh (energy) or minor units (money) per token value unit
    starting_count: int = STARTING_COUNT

    def __post_init__(self) -> None:
        if not isinstance(self.secret_key, bytes) or len(self.secret_key) != SECRET_KEY_BYTES:
            size = (
                len(self.secret_key) if isinstance(self.secret_key, bytes) else type(self.secret_key).__name__
            )
            raise ValueError(f"token secret_key must be {SECRET_KEY_BYTES} bytes, got {size}")
        for name, value, low, high in (
            ("starting_code", self.starting_code, 0, MAX_STARTING_CODE),
            ("unit_size", self.unit_size, 1, None),
            ("starting_count", self.starting_count, 0, None),
        ):
            if type(value) is not int or value < low or (high is not None and value > high):
                bound = f"{low}..{high}" if high is not None else f"at least {low}"
                raise ValueError(f"token {name} must be a whole number {bound}, got {value!r}")
        object.__setattr__(self, "credit_kind", CreditKind(self.credit_kind))


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """One entry of the token log. `occurred_at` is the meter's clock. `credit_change` is in the register's
    unit (Wh or minor units); `count`, `kind` and `value` are None for a refused token."""

    sequence: int
    occurred_at: datetime
    accepted: bool
    reason: RejectReason | None = None
    count: int | None = None
    kind: TokenKind | None = None
    value: int | None = None  # token units
    credit_change: int = 0
    credit_after: int = 0


@dataclass(frozen=True, slots=True)
class TokenResult:
    """What entering a token did: the event it logged, and the register after it."""

    event: TokenEvent
    credit: int
    prepayment_enabled: bool

    @property
    def accepted(self) -> bool:
        return self.event.accepted

    @property
    def reason(self) -> RejectReason | None:
        return self.event.reason


class TokenRegister:
    """The meter's token state: count, used-counts window, prepaid credit, lockout and the token log.

    Pure: no clock of its own; the meter passes its clock's reading with each token.
    """

    __slots__ = (
        "_config", "_count", "_credit", "_hex_key", "_invalid_in_row", "_last_sequence", "_locked_until",
        "_log", "_prepayment_enabled", "_used_counts",
    )  # fmt: skip

    def __init__(self, config: TokenConfig, log_capacity: int = DEFAULT_TOKEN_LOG_CAPACITY) -> None:
        if not isinstance(config, TokenConfig):
            raise TypeError(f"config must be a TokenConfig, got {type(config).__name__}")
        if log_capacity < 1:
            raise ValueError(f"token log capacity must be at least 1, got {log_capacity}")
        self._config = config
        self._hex_key = config.secret_key.hex()
        self._count = config.starting_count
        # Seeded with the starting count, which no token carries: openpaygo's update_used_counts returns None
        # for an empty list, which would break the next out-of-order check.
        self._used_counts: list[int] = [config.starting_count]
        self._credit = 0
        self._prepayment_enabled = True
        self._invalid_in_row = 0
        self._locked_until: datetime | None = None
        self._log: deque[TokenEvent] = deque(maxlen=log_capacity)
        self._last_sequence = 0

    @property
    def credit_kind(self) -> CreditKind:
        return self._config.credit_kind

    @property
    def credit(self) -> int:
        """The prepaid register: Wh (energy) or minor units (money)."""
        return self._credit

    @property
    def prepayment_enabled(self) -> bool:
        """False after a disable token: the supply no longer depends on credit."""
        return self._prepayment_enabled

    @property
    def count(self) -> int:
        """The highest token count accepted (the starting count before any)."""
        return self._count

    @property
    def used_counts(self) -> tuple[int, ...]:
        return tuple(self._used_counts)

    @property
    def locked_until(self) -> datetime | None:
        return self._locked_until

    @property
    def last_sequence(self) -> int:
        return self._last_sequence

    def events_since(self, sequence: int) -> list[TokenEvent]:
        """Token log entries numbered above `sequence`, oldest first (only those still held)."""
        if not self._log:
            return []
        skip = max(0, sequence + 1 - self._log[0].sequence)
        return list(islice(self._log, skip, None))

    def enter(self, token: str, occurred_at: datetime) -> TokenResult:
        """Enter `token` at the meter's time `occurred_at`: accepted once, or refused with a reason."""
        now = ensure_aware(occurred_at, "occurred_at")
        if self._locked_until is not None and now < self._locked_until:
            return self._refuse(RejectReason.LOCKED_OUT, now)
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            return self._refuse(RejectReason.MALFORMED, now)
        value, token_type, count, updated_counts = OpenPAYGOTokenDecoder.decode_token(
            token=token,
            secret_key=self._hex_key,
            count=self._count,
            used_counts=list(self._used_counts),
            starting_code=self._config.starting_code,
        )
        if token_type == TokenType.ALREADY_USED:
            return self._refuse(RejectReason.ALREADY_USED, now)
        if value is None or count is None or token_type == TokenType.INVALID:
            self._invalid_in_row += 1
            lockout = min(timedelta(minutes=2 ** min(self._invalid_in_row, 20)), MAX_LOCKOUT)
            self._locked_until = now + lockout
            return self._refuse(RejectReason.INVALID, now)
        value = int(value)
        if count > self._count or value == _COUNTER_SYNC_VALUE:
            self._count = count
        self._used_counts = list(updated_counts)
        self._invalid_in_row = 0
        self._locked_until = None
        kind, change = self._apply(value, token_type)
        return self._record(
            TokenEvent(
                self._last_sequence + 1,
                now,
                accepted=True,
                count=count,
                kind=kind,
                value=None if kind in (TokenKind.DISABLE, TokenKind.COUNTER_SYNC) else value,
                credit_change=change,
                credit_after=self._credit,
            )
        )

    def _apply(self, value: int, token_type: int) -> tuple[TokenKind, int]:
        """Carry out a genuine token; returns its kind and how much the credit changed."""
        if token_type == TokenType.ADD_TIME:
            change = value * self._config.unit_size
            self._credit += change
            return TokenKind.ADD, change
        if value == _PAYG_DISABLE_VALUE:
            self._prepayment_enabled = False
            return TokenKind.DISABLE, 0
        if value == _COUNTER_SYNC_VALUE:
            return TokenKind.COUNTER_SYNC, 0
        before = self._credit
        self._credit = value * self._config.unit_size
        self._prepayment_enabled = True
        return TokenKind.SET, self._credit - before

    def _refuse(self, reason: RejectReason, now: datetime) -> TokenResult:
        return self._record(
            TokenEvent(self._last_sequence + 1, now, accepted=False, reason=reason, credit_after=self._credit)
        )

    def _record(self, event: TokenEvent) -> TokenResult:
        self._last_sequence = event.sequence
        self._log.append(event)
        return TokenResult(event, self._credit, self._prepayment_enabled)

    def __repr__(self) -> str:
        return (
            f"TokenRegister(credit={self._credit} {self.credit_kind.value}, count={self._count}, "
            f"prepayment_enabled={self._prepayment_enabled})"
        )
