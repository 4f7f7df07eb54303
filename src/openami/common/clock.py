"""The project's clock. Code reads time only through a `Clock`, so the simulator and tests can run time fast.

Every instant is a timezone-aware `datetime` in UTC.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Anything that can tell the current instant (aware, UTC)."""

    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock of the machine, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to: for the simulator's fast time and for tests.

    Thread-safe, because head-end workers read it while the simulator advances it.
    """

    def __init__(self, start: datetime) -> None:
        ensure_aware(start, "start")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, instant: datetime) -> None:
        ensure_aware(instant, "instant")
        with self._lock:
            self._now = instant.astimezone(UTC)

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError(f"a clock cannot go backwards (delta={delta})")
        with self._lock:
            self._now = self._now + delta
            return self._now


def ensure_aware(instant: datetime, name: str = "instant") -> datetime:
    """Return `instant` in UTC, or raise if it carries no time zone."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {instant.isoformat()}")
    return instant.astimezone(UTC)
