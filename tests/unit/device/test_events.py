"""The event log: ordered, bounded, readable from a sequence number; every code has its IDIS number."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from openami.device import IDIS_EVENT_NUMBERS, EventCode
from openami.device.events import EventLog

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def test_every_event_code_has_an_idis_number() -> None:
    assert set(IDIS_EVENT_NUMBERS) == set(EventCode)
    assert IDIS_EVENT_NUMBERS[EventCode.POWER_DOWN] == 1
    assert IDIS_EVENT_NUMBERS[EventCode.POWER_UP] == 2
    assert IDIS_EVENT_NUMBERS[EventCode.RELAY_OPENED] == 62
    assert IDIS_EVENT_NUMBERS[EventCode.RELAY_CLOSED] == 63


def test_codes_are_stable_strings() -> None:
    assert str(EventCode.POWER_DOWN) == "power_down"
    assert EventCode("memory_repaired") is EventCode.MEMORY_REPAIRED


def test_events_since_returns_newer_events_oldest_first() -> None:
    log = EventLog(capacity=10)
    for minute, code in enumerate([EventCode.POWER_DOWN, EventCode.POWER_UP, EventCode.CLOCK_SET]):
        log.record(code, T0 + timedelta(minutes=minute), f"#{minute}")
    assert log.last_sequence == 3
    assert [e.sequence for e in log.since(0)] == [1, 2, 3]
    assert [e.code for e in log.since(1)] == [EventCode.POWER_UP, EventCode.CLOCK_SET]
    assert log.since(3) == []
    assert log.since(1)[0].occurred_at == T0 + timedelta(minutes=1)
    assert log.since(2)[0].detail == "#2"


def test_a_full_log_drops_the_oldest_and_keeps_numbering() -> None:
    log = EventLog(capacity=3)
    for minute in range(5):
        log.record(EventCode.RELAY_OPENED, T0 + timedelta(minutes=minute))
    assert len(log) == 3
    assert [e.sequence for e in log.since(0)] == [3, 4, 5]
    assert [e.sequence for e in log.since(4)] == [5]


def test_an_event_time_must_be_aware() -> None:
    log = EventLog(capacity=3)
    with pytest.raises(ValueError, match="occurred_at"):
        log.record(EventCode.POWER_UP, datetime(2026, 3, 2))  # noqa: DTZ001 - the naive time is the point


def test_an_empty_capacity_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        EventLog(capacity=0)
