"""Units and intervals. Energy is integer Wh, power W, current mA, voltage V (float)."""

from __future__ import annotations

from datetime import datetime, timedelta

from openami.common.clock import ensure_aware


def floor_to_interval(instant: datetime, length: timedelta) -> datetime:
    """The start of the interval of `length` (aligned to the Unix epoch, i.e. UTC midnight) holding `instant`."""
    instant = ensure_aware(instant)
    seconds = int(length.total_seconds())
    epoch_s = int(instant.timestamp())
    return datetime.fromtimestamp(epoch_s - epoch_s % seconds, tz=instant.tzinfo)


def interval_starts(start: datetime, end: datetime, length: timedelta) -> list[datetime]:
    """Every interval start in `[start, end)`, stepping by `length`."""
    out = []
    t = start
    while t < end:
        out.append(t)
        t += length
    return out
