"""The number each event has on the wire, in the code set the meter is configured for.

openami's own codes (`EventCode`) are stable strings; DLMS event logs carry numbers, and which numbers depends
on the companion specification the utility buys meters to:

- **IDIS** (the default; DLMS UA / IDIS association, used across Europe): `events.IDIS_EVENT_NUMBERS`.
  Standard event log 1, 2, 4, 14; fraud detection log 40..45; disconnector control log 62, 63, 65..67.
- **IS 15959** (the Indian companion specification, BIS; Part 2 for single-phase whole-current meters): event
  IDs by category, occurrence and restoration in pairs: current-related 51/52 (phase current reverse), 69/70
  (earth loading); power failure 101/102; transactions 151 (real-time clock set), 158 (load limit set); other
  events 201/202 (influence of permanent magnet or AC/DC electromagnet), 207/208 (single-wire operation,
  neutral missing); non-rollover 251 (meter cover opening, occurrence only); control 301/302 (load switch
  disconnected / connected).

These numbers are taken from the standards' event lists as published and as meter firmware and head-end code
reproduce them; `ASSUMED_NUMBERS` names the ones that are not from a standard list but openami's choice,
because the standard has no such event (IS 15959 logs no cover closing, no terminal cover and no memory error;
IDIS has no mismatch, missing-neutral or reverse-current event we could confirm). A transport that meets one of
those should treat the number as manufacturer-specific.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from openami.device.events import IDIS_EVENT_NUMBERS, EventCode


class EventCodeSet(enum.StrEnum):
    """Which companion specification's event numbers the meter reports."""

    IDIS = "idis"
    IS_15959 = "is15959"


IS_15959_EVENT_NUMBERS: Mapping[EventCode, int] = MappingProxyType(
    {
        EventCode.POWER_DOWN: 101,
        EventCode.POWER_UP: 102,
        EventCode.CLOCK_SET: 151,
        EventCode.MEMORY_REPAIRED: 255,
        EventCode.MEMORY_LOST: 255,
        EventCode.RELAY_OPENED: 301,
        EventCode.RELAY_CLOSED: 302,
        # The limiter works the same load switch; IS 15959 has no separate number, the detail tells the cause.
        EventCode.LOAD_LIMIT_EXCEEDED: 301,
        EventCode.LOAD_LIMIT_RECLOSED: 302,
        EventCode.LOAD_LIMIT_SET: 158,
        EventCode.METER_COVER_OPENED: 251,
        EventCode.METER_COVER_CLOSED: 252,
        EventCode.TERMINAL_COVER_OPENED: 253,
        EventCode.TERMINAL_COVER_CLOSED: 254,
        EventCode.MAGNETIC_FIELD_DETECTED: 201,
        EventCode.MAGNETIC_FIELD_CLEARED: 202,
        EventCode.CURRENT_MISMATCH_DETECTED: 69,
        EventCode.CURRENT_MISMATCH_CLEARED: 70,
        EventCode.NEUTRAL_MISSING_DETECTED: 207,
        EventCode.NEUTRAL_MISSING_CLEARED: 208,
        EventCode.REVERSE_CURRENT_DETECTED: 51,
        EventCode.REVERSE_CURRENT_CLEARED: 52,
    }
)

EVENT_NUMBERS: Mapping[EventCodeSet, Mapping[EventCode, int]] = MappingProxyType(
    {EventCodeSet.IDIS: IDIS_EVENT_NUMBERS, EventCodeSet.IS_15959: IS_15959_EVENT_NUMBERS}
)

ASSUMED_NUMBERS: Mapping[EventCodeSet, frozenset[EventCode]] = MappingProxyType(
    {
        EventCodeSet.IDIS: frozenset(
            {
                EventCode.CURRENT_MISMATCH_DETECTED,
                EventCode.CURRENT_MISMATCH_CLEARED,
                EventCode.NEUTRAL_MISSING_DETECTED,
                EventCode.NEUTRAL_MISSING_CLEARED,
                EventCode.REVERSE_CURRENT_DETECTED,
                EventCode.REVERSE_CURRENT_CLEARED,
            }
        ),
        EventCodeSet.IS_15959: frozenset(
            {
                EventCode.MEMORY_REPAIRED,
                EventCode.MEMORY_LOST,
                EventCode.METER_COVER_CLOSED,
                EventCode.TERMINAL_COVER_OPENED,
                EventCode.TERMINAL_COVER_CLOSED,
            }
        ),
    }
)


def event_number(code: EventCode, code_set: EventCodeSet = EventCodeSet.IDIS) -> int:
    """The number of event `code` in `code_set`."""
    try:
        numbers = EVENT_NUMBERS[EventCodeSet(code_set)]
    except ValueError:
        raise ValueError(
            f"unknown event code set {code_set!r}; expected one of {[s.value for s in EventCodeSet]}"
        ) from None
    try:
        return numbers[EventCode(code)]
    except (KeyError, ValueError):
        raise ValueError(f"event code {code!r} has no number in the {code_set} code set") from None
