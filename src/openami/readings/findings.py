"""What a VEE rule reports: the `Rule` it applies, the `Flag` it raises, and how a flag's reason is worded.

Reasons carry their numbers with units, thousands spaced ("13 648 W"), and instants in UTC; estimates word
their reasons the same way.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime


class Rule(enum.StrEnum):
    GAP = "gap"
    SPIKE = "spike"
    NEGATIVE = "negative"
    REGISTER_MISMATCH = "register_mismatch"
    CLOCK_DRIFT = "clock_drift"
    ZERO_RUN = "zero_run"
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class Flag:
    """One problem a rule found: the rule, the quantity, the affected span `[start, end)` (UTC) and why."""

    rule: Rule
    obis: str
    start: datetime  # first affected instant or interval start (aware UTC)
    end: datetime  # end of the affected span, exclusive (== start for an instant)
    reason: str  # human readable, with the numbers and units


def format_number(value: float) -> str:
    """`13648` -> "13 648", `13800.4` -> "13 800.4": spaces between thousands, a decimal if not whole."""
    if isinstance(value, int) or value.is_integer():
        return f"{int(value):,}".replace(",", " ")
    return f"{value:,.1f}".replace(",", " ")


def format_energy_wh(energy_wh: int) -> str:
    return f"{format_number(energy_wh)} Wh"


def format_instant(instant: datetime) -> str:
    """An instant as "2026-03-02 10:15 UTC" (seconds shown only when not zero)."""
    t = instant.astimezone(UTC)
    if t.microsecond:
        return t.strftime("%Y-%m-%d %H:%M:%S.%f UTC")
    if t.second:
        return t.strftime("%Y-%m-%d %H:%M:%S UTC")
    return t.strftime("%Y-%m-%d %H:%M UTC")


def format_duration(seconds: int) -> str:
    """A whole number of seconds as "1 d 2 h 15 min 30 s", leaving out zero parts ("15 min", "0 s")."""
    if seconds == 0:
        return "0 s"
    sign = "-" if seconds < 0 else ""
    rest = abs(seconds)
    parts = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count} {unit}")
    return sign + " ".join(parts)
