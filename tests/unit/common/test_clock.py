from datetime import UTC, datetime, timedelta, timezone

import pytest

from openami.common.clock import ManualClock, SystemClock, ensure_aware
from openami.common.units import floor_to_interval, interval_starts


def test_manual_clock_moves_only_when_told() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    assert clock.now() == datetime(2026, 1, 1, tzinfo=UTC)
    assert clock.advance(timedelta(minutes=15)) == datetime(2026, 1, 1, 0, 15, tzinfo=UTC)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(timedelta(seconds=-1))


def test_manual_clock_refuses_naive_and_normalises_to_utc() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ManualClock(datetime(2026, 1, 1))  # noqa: DTZ001
    clock = ManualClock(datetime(2026, 1, 1, 3, 0, tzinfo=timezone(timedelta(hours=3))))
    assert clock.now() == datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    assert clock.now().tzinfo is UTC


def test_system_clock_is_aware() -> None:
    assert SystemClock().now().utcoffset() == timedelta(0)


def test_ensure_aware_names_the_field() -> None:
    with pytest.raises(ValueError, match="read_at"):
        ensure_aware(datetime(2026, 1, 1), "read_at")  # noqa: DTZ001


def test_floor_and_starts() -> None:
    t = datetime(2026, 1, 1, 10, 7, 59, tzinfo=UTC)
    assert floor_to_interval(t, timedelta(minutes=15)) == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    starts = interval_starts(
        datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC), timedelta(minutes=15)
    )
    assert len(starts) == 4
    assert starts[-1] == datetime(2026, 1, 1, 0, 45, tzinfo=UTC)
