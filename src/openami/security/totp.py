"""Time-based one-time passwords (RFC 6238, HMAC-SHA1, 6 digits, 30 s steps) with replay refusal. No clock inside.

A code is accepted in the time step of `at` or one step either side (clock drift between phone and server). Once a
step has been accepted, no code of that step or an earlier one is accepted again: the caller stores the step
returned and passes it back next time (RFC 6238 section 5.2).
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass
from datetime import datetime

import pyotp

from openami.common.clock import ensure_aware
from openami.common.errors import ValidationError

TOTP_STEP_S = 30
TOTP_DIGITS = 6
TOTP_WINDOW_STEPS = 1
# 32 base32 characters are 160 bits, the HMAC-SHA1 key length RFC 4226 section 4 recommends.
TOTP_SECRET_CHARS = 32


class TotpRefusal(enum.StrEnum):
    MALFORMED = "malformed"
    WRONG = "wrong"
    REUSED = "reused"


_MESSAGES = {
    TotpRefusal.MALFORMED: f"a one-time code is {TOTP_DIGITS} digits",
    TotpRefusal.WRONG: "wrong or expired one-time code",
    TotpRefusal.REUSED: "this one-time code was already used; wait for the next one",
}


@dataclass(frozen=True, slots=True)
class TotpCheck:
    """The outcome of `verify_totp`: the step to store as the last accepted one, or why the code was refused."""

    accepted_step: int | None
    refusal: TotpRefusal | None

    @property
    def accepted(self) -> bool:
        return self.accepted_step is not None

    @property
    def message(self) -> str:
        return "accepted" if self.refusal is None else _MESSAGES[self.refusal]


def new_totp_secret() -> str:
    """A fresh random shared secret, base32 (what authenticator apps expect)."""
    return pyotp.random_base32(length=TOTP_SECRET_CHARS)


def _totp(secret: str) -> pyotp.TOTP:
    try:
        # The constructor decodes the secret and checks its length (at least 112 bits).
        return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_STEP_S)
    except ValueError as exc:  # binascii.Error is a ValueError too
        raise ValidationError(f"not a usable base32 secret ({exc})", "totp secret") from exc


def provisioning_uri(secret: str, account_name: str, issuer: str = "openami") -> str:
    """The `otpauth://totp/...` URI an authenticator app reads from a QR code."""
    if not account_name.strip():
        raise ValidationError("must not be empty", "totp account name")
    return _totp(secret).provisioning_uri(name=account_name, issuer_name=issuer)


def totp_time_step(at: datetime) -> int:
    """The RFC 6238 time step holding `at`: whole 30 s periods since the Unix epoch."""
    return int(ensure_aware(at, "at").timestamp()) // TOTP_STEP_S


def totp_code(secret: str, at: datetime) -> str:
    """The code an authenticator app shows at `at` (for enrolment checks, the simulator and tests)."""
    return _totp(secret).generate_otp(totp_time_step(at))


def verify_totp(secret: str, code: str, at: datetime, last_step: int | None) -> TotpCheck:
    """Check `code` at `at` within ±1 step, refusing any step at or before `last_step` (the last one accepted)."""
    totp = _totp(secret)
    current = totp_time_step(at)
    code = code.strip().replace(" ", "")
    if len(code) != TOTP_DIGITS or not code.isascii() or not code.isdigit():
        return TotpCheck(None, TotpRefusal.MALFORMED)
    # Every step of the window is computed and compared in constant time, so timing tells nothing about which matched.
    matching = [
        step
        for step in range(current - TOTP_WINDOW_STEPS, current + TOTP_WINDOW_STEPS + 1)
        if hmac.compare_digest(totp.generate_otp(step), code)
    ]
    if not matching:
        return TotpCheck(None, TotpRefusal.WRONG)
    fresh = [step for step in matching if last_step is None or step > last_step]
    if not fresh:
        return TotpCheck(None, TotpRefusal.REUSED)
    return TotpCheck(max(fresh), None)
