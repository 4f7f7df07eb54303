"""The retry schedule of a failed event: exponential backoff with jitter, and when to give up. Pure: the random
source is passed in, so a seeded `random.Random` makes the schedule reproducible in tests."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """After failed attempt `n` (1-based) the event waits `min(cap_s, base_s × 2^(n-1))` seconds, shortened by a
    random share of up to `jitter` of that, so that events which failed together do not all retry together. After
    `max_attempts` attempts it is dead."""

    max_attempts: int = 8
    base_s: float = 10.0
    cap_s: float = 3600.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be at least 1, got {self.max_attempts}")
        if not 0 < self.base_s <= self.cap_s:
            raise ValueError(
                f"RetryPolicy needs 0 < base_s <= cap_s, got base_s={self.base_s}, cap_s={self.cap_s}"
            )
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"RetryPolicy.jitter is a share in [0, 1], got {self.jitter}")

    def gives_up_after(self, attempts: int) -> bool:
        """Whether an event that has been attempted `attempts` times, the last one failed, is dead."""
        return attempts >= self.max_attempts

    def delay(self, attempt: int, rng: random.Random) -> timedelta:
        """How long to wait after failed attempt `attempt` (1-based) before the next."""
        if attempt < 1:
            raise ValueError(f"attempts are counted from 1, got {attempt}")
        # 2^(attempt-1) grows past any cap quickly; stop doubling before the float overflows.
        ceiling_s = min(self.cap_s, self.base_s * 2.0 ** min(attempt - 1, 64))
        return timedelta(seconds=ceiling_s * (1.0 - self.jitter * rng.random()))
