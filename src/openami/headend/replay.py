"""Anti-replay with a sliding window of the last 64 counters (the IPsec scheme, RFC 4303 section 3.4.3). Pure.

A counter above the highest seen is accepted and slides the window; a counter up to 63 below it is accepted
once (so frames reordered on the way survive); anything older, or seen before, is a replay.
"""

from __future__ import annotations

from dataclasses import dataclass

WINDOW_SIZE = 64
_MASK = (1 << WINDOW_SIZE) - 1
_SIGN = 1 << (WINDOW_SIZE - 1)


@dataclass(frozen=True, slots=True)
class ReplayState:
    """`highest`: highest counter accepted (0: none yet). Bit i of `window`: counter `highest - i` seen."""

    highest: int = 0
    window: int = 0


def sliding_window(state: ReplayState, counter: int) -> ReplayState | None:
    """The state after accepting `counter`, or None for a replay (seen before, or older than the window)."""
    if counter > state.highest:
        shift = counter - state.highest
        window = ((state.window << shift) | 1) & _MASK if shift < WINDOW_SIZE else 1
        return ReplayState(counter, window)
    age = state.highest - counter
    if age >= WINDOW_SIZE or state.window >> age & 1:
        return None
    return ReplayState(state.highest, state.window | 1 << age)


def window_to_signed(window: int) -> int:
    """The 64-bit window as a signed 64-bit integer, for a BIGINT column (two's complement)."""
    return window - (1 << WINDOW_SIZE) if window & _SIGN else window


def window_from_signed(value: int) -> int:
    """Inverse of `window_to_signed`."""
    return value & _MASK
