"""Declarative descriptions of the quantities a meter reports, named by OBIS code (IEC 62056-61).

These descriptions drive validation, storage, the wire format and the simulator alike: adding a quantity here makes it
known everywhere. Units are SenML units (RFC 8428 section 12.1).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.StrEnum):
    """How a quantity behaves over time."""

    REGISTER = "register"  # cumulative, never decreases (energy registers)
    INTERVAL = "interval"  # energy in one load-profile interval
    INSTANT = "instant"  # instantaneous value at the moment of reading (voltage, current, power)
    STATE = "state"  # a discrete state (relay)


@dataclass(frozen=True, slots=True)
class Quantity:
    obis: str
    name: str
    kind: Kind
    unit: str  # SenML unit: "Wh", "W", "V", "A", "" for states
    scale: int = 0  # stored integer = value × 10**scale (current is stored in mA, i.e. A × 10**3)
    rate: int = 0  # tariff rate 1..4 for per-rate registers, 0 for totals


ACTIVE_IMPORT_TOTAL = "1-0:1.8.0"
ACTIVE_EXPORT_TOTAL = "1-0:2.8.0"
ACTIVE_IMPORT_INTERVAL = "1-0:1.29.0"  # energy imported in the capture period (load profile)
ACTIVE_EXPORT_INTERVAL = "1-0:2.29.0"
ACTIVE_POWER_IMPORT = "1-0:1.7.0"
ACTIVE_POWER_EXPORT = "1-0:2.7.0"
VOLTAGE_L1 = "1-0:32.7.0"
CURRENT_L1 = "1-0:31.7.0"
CURRENT_NEUTRAL = "1-0:91.7.0"
RELAY_STATE = "0-0:96.3.10"  # disconnect control output state: 1 connected, 0 disconnected
CLOCK = "0-0:1.0.0"
LOAD_LIMIT = "0-0:17.0.0"  # DLMS limiter threshold: import power W above which the meter trips; 0 none


def _per_rate(base: str, name: str) -> list[Quantity]:
    stem = base.rsplit(".", 1)[0]
    return [Quantity(f"{stem}.{r}", f"{name} rate {r}", Kind.REGISTER, "Wh", rate=r) for r in range(1, 5)]


QUANTITIES: dict[str, Quantity] = {
    q.obis: q
    for q in [
        Quantity(ACTIVE_IMPORT_TOTAL, "active energy import total", Kind.REGISTER, "Wh"),
        Quantity(ACTIVE_EXPORT_TOTAL, "active energy export total", Kind.REGISTER, "Wh"),
        *_per_rate(ACTIVE_IMPORT_TOTAL, "active energy import"),
        *_per_rate(ACTIVE_EXPORT_TOTAL, "active energy export"),
        Quantity(ACTIVE_IMPORT_INTERVAL, "active energy import in interval", Kind.INTERVAL, "Wh"),
        Quantity(ACTIVE_EXPORT_INTERVAL, "active energy export in interval", Kind.INTERVAL, "Wh"),
        Quantity(ACTIVE_POWER_IMPORT, "active power import", Kind.INSTANT, "W"),
        Quantity(ACTIVE_POWER_EXPORT, "active power export", Kind.INSTANT, "W"),
        Quantity(VOLTAGE_L1, "voltage L1", Kind.INSTANT, "V"),
        Quantity(CURRENT_L1, "current L1 (phase)", Kind.INSTANT, "A", scale=3),
        Quantity(CURRENT_NEUTRAL, "current neutral", Kind.INSTANT, "A", scale=3),
        Quantity(RELAY_STATE, "relay (disconnect control) state", Kind.STATE, ""),
        Quantity(LOAD_LIMIT, "load limit (limiter threshold)", Kind.INSTANT, "W"),
    ]
}


def quantity(obis: str) -> Quantity:
    """The description of `obis`, or KeyError naming the unknown code."""
    try:
        return QUANTITIES[obis]
    except KeyError:
        raise KeyError(f"unknown OBIS code {obis!r}") from None
