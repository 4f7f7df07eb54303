"""The meter's event log: what happened, stamped by the meter's own clock, numbered in the order it happened.

Codes are short stable strings (readable on the wire and in the database). `IDIS_EVENT_NUMBERS` gives each the
event number of the IDIS / DLMS event logs, for transports that speak DLMS:

- 1 power down, 2 power up (standard event log);
- 4 clock adjusted, stamped with the old date/time (standard event log; a CLOCK_SET event is stamped the same
  way);
- 14 NV memory error (standard event log). IDIS has no separate number for an error the meter corrected
  itself, so MEMORY_REPAIRED and MEMORY_LOST both report 14 there; the code and detail tell them apart;
- 62 remote disconnection, 63 remote connection (disconnector control log);
- 65 limiter threshold exceeded: the load limiter opened the relay (a local disconnection, not a remote one;
  the detail says since when import power was above which limit); 66 limiter threshold ok: the limiter closed
  the relay again after its wait (or released it when the limit was removed); 67 limiter threshold changed
  (by a set_load_limit command, the detail gives old and new W);
- 40 terminal cover removed, 41 closed; 42 strong DC field detected, 43 no strong DC field anymore; 44 meter
  cover removed, 45 closed (fraud detection log). IDIS names a DC field; the sensor here reads any strong field;
- current mismatch (earth load / bypass), neutral missing and reverse current have no IDIS number known to us:
  231..236 are openami's choice in the range left to manufacturers (see `device.event_codes`, which also holds
  the IS 15959 numbers and says which numbers are assumptions).

Tamper events come in pairs, a start and an end (`device.tamper.EPISODE_ENDS`). To add an event: add a member
to `EventCode` and its number to `IDIS_EVENT_NUMBERS` and to the IS 15959 table in `device.event_codes`. The
log itself takes any code.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from types import MappingProxyType

from openami.common.clock import ensure_aware


class EventCode(enum.StrEnum):
    POWER_DOWN = "power_down"
    POWER_UP = "power_up"
    CLOCK_SET = "clock_set"
    MEMORY_REPAIRED = "memory_repaired"
    MEMORY_LOST = "memory_lost"
    RELAY_OPENED = "relay_opened"
    RELAY_CLOSED = "relay_closed"
    LOAD_LIMIT_EXCEEDED = "load_limit_exceeded"
    LOAD_LIMIT_RECLOSED = "load_limit_reclosed"
    LOAD_LIMIT_SET = "load_limit_set"
    METER_COVER_OPENED = "meter_cover_opened"
    METER_COVER_CLOSED = "meter_cover_closed"
    TERMINAL_COVER_OPENED = "terminal_cover_opened"
    TERMINAL_COVER_CLOSED = "terminal_cover_closed"
    MAGNETIC_FIELD_DETECTED = "magnetic_field_detected"
    MAGNETIC_FIELD_CLEARED = "magnetic_field_cleared"
    CURRENT_MISMATCH_DETECTED = "current_mismatch_detected"
    CURRENT_MISMATCH_CLEARED = "current_mismatch_cleared"
    NEUTRAL_MISSING_DETECTED = "neutral_missing_detected"
    NEUTRAL_MISSING_CLEARED = "neutral_missing_cleared"
    REVERSE_CURRENT_DETECTED = "reverse_current_detected"
    REVERSE_CURRENT_CLEARED = "reverse_current_cleared"


IDIS_EVENT_NUMBERS: Mapping[EventCode, int] = MappingProxyType(
    {
        EventCode.POWER_DOWN: 1,
        EventCode.POWER_UP: 2,
        EventCode.CLOCK_SET: 4,
        EventCode.MEMORY_REPAIRED: 14,
        EventCode.MEMORY_LOST: 14,
        EventCode.RELAY_OPENED: 62,
        EventCode.RELAY_CLOSED: 63,
        EventCode.LOAD_LIMIT_EXCEEDED: 65,
        EventCode.LOAD_LIMIT_RECLOSED: 66,
        EventCode.LOAD_LIMIT_SET: 67,
        EventCode.TERMINAL_COVER_OPENED: 40,
        EventCode.TERMINAL_COVER_CLOSED: 41,
        EventCode.MAGNETIC_FIELD_DETECTED: 42,
        EventCode.MAGNETIC_FIELD_CLEARED: 43,
        EventCode.METER_COVER_OPENED: 44,
        EventCode.METER_COVER_CLOSED: 45,
        EventCode.CURRENT_MISMATCH_DETECTED: 231,
        EventCode.CURRENT_MISMATCH_CLEARED: 232,
        EventCode.NEUTRAL_MISSING_DETECTED: 233,
        EventCode.NEUTRAL_MISSING_CLEARED: 234,
        EventCode.REVERSE_CURRENT_DETECTED: 235,
        EventCode.REVERSE_CURRENT_CLEARED: 236,
    }
)


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the event log. `occurred_at` is the meter's clock (aware UTC), not true time."""

    sequence: int
    code: EventCode
    occurred_at: datetime
    detail: str = ""


class EventLog:
    """A bounded log, like the meter's: when full, the oldest entry goes. Sequence numbers start at 1 and
    never repeat, so a reader that remembers the last number it saw gets each event once."""

    __slots__ = ("_entries", "_last_sequence")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"event log capacity must be at least 1, got {capacity}")
        self._entries: deque[Event] = deque(maxlen=capacity)
        self._last_sequence = 0

    @property
    def last_sequence(self) -> int:
        """The number of the newest event, 0 when nothing was ever logged."""
        return self._last_sequence

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, code: EventCode, occurred_at: datetime, detail: str = "") -> Event:
        """Append an event and return it."""
        self._last_sequence += 1
        event = Event(self._last_sequence, EventCode(code), ensure_aware(occurred_at, "occurred_at"), detail)
        self._entries.append(event)
        return event

    def since(self, sequence: int) -> list[Event]:
        """Events numbered above `sequence`, oldest first (only those still held)."""
        if not self._entries:
            return []
        skip = max(0, sequence + 1 - self._entries[0].sequence)
        return list(islice(self._entries, skip, None))
