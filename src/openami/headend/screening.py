"""Physical and temporal plausibility of a decoded frame, before anything of it is stored. Pure.

A frame with any implausible record is rejected whole (docs/protocol.md, "Rejections"): the meter's other
values in the same frame come from the same, evidently faulty, firmware state, and a partial frame would
leave gaps that look like transmission losses. Checks run in this order and the first failure is reported:
times (`time_out_of_range`), then values (`impossible_value`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta

from openami.common.errors import FrameRejected
from openami.common.obis import QUANTITIES, RELAY_STATE, Kind
from openami.headend.senml import UplinkContent
from openami.readings.interfaces import InstantValue, IntervalValue, MeterEvent, RegisterValue
from openami.registry.interfaces import NOMINAL_VOLTAGE_V, MeterInfo

# Between the service rating and this many times it, a value is implausible but possible (a fault, a
# bypass): it is stored and flagged by VEE. Beyond it no installed meter can have measured it. Readings uses
# the same factor.
PHYSICAL_LIMIT_FACTOR = 10
MAX_VOLTAGE_V = 2 * NOMINAL_VOLTAGE_V
# 1 TWh: beyond any service's lifetime consumption; keeps registers far from the 64-bit column limit.
MAX_REGISTER_WH = 10**12


_Dated = IntervalValue | RegisterValue | InstantValue | MeterEvent | None


def _timestamps(content: UplinkContent) -> Iterator[tuple[_Dated, datetime]]:
    """Every instant of the frame with the value it belongs to (None: the meter's clock)."""
    yield None, content.meter_time
    for iv in content.intervals:
        # A load-profile entry exists only once its interval has closed, so its end is what cannot be future.
        yield iv, iv.interval_start + timedelta(seconds=iv.interval_s)
    for rv in content.registers:
        yield rv, rv.read_at
    for inst in content.instants:
        yield inst, inst.read_at
    for ev in content.events:
        yield ev, ev.occurred_at


def _describe(value: _Dated) -> str:
    """Names the instant in a rejection; built only when one is reported, since the checks run per value."""
    if value is None:
        return "meter time (bt)"
    if isinstance(value, IntervalValue):
        return f"{value.obis} interval end"
    if isinstance(value, MeterEvent):
        return f"event {value.sequence} ({value.code})"
    return f"{value.obis} read"


def time_window(
    content: UplinkContent, received_at: datetime, *, max_clock_skew_s: int, max_reading_age_days: int
) -> None:
    """Raise `time_out_of_range` for an instant after `received_at` + skew or before `received_at` - age."""
    latest = received_at + timedelta(seconds=max_clock_skew_s)
    earliest = received_at - timedelta(days=max_reading_age_days)
    for what, at in _timestamps(content):
        if at > latest:
            ahead_s = (at - received_at).total_seconds()
            raise FrameRejected(
                "time_out_of_range",
                f"{_describe(what)} {at.isoformat()} is {ahead_s:.0f} s ahead of the head-end clock "
                f"(at most {max_clock_skew_s} s allowed)",
            )
        if at < earliest:
            raise FrameRejected(
                "time_out_of_range",
                f"{_describe(what)} {at.isoformat()} is older than {max_reading_age_days} days",
            )


def physical_limits(content: UplinkContent, meter: MeterInfo) -> None:
    """Raise `impossible_value` for a value no meter of this rating can have measured."""
    max_power_w = PHYSICAL_LIMIT_FACTOR * meter.max_power_w
    max_current_a = PHYSICAL_LIMIT_FACTOR * meter.rated_current_a
    max_wh_per_s = max_power_w / 3600
    for iv in content.intervals:
        if (
            iv.interval_s == meter.load_profile_interval_s
            and 0 <= iv.energy_wh <= max_wh_per_s * iv.interval_s
        ):
            continue  # the usual case, decided without building a message
        where = f"{iv.obis} interval {iv.interval_start.isoformat()}"
        if iv.interval_s != meter.load_profile_interval_s:
            raise FrameRejected(
                "impossible_value",
                f"{where}: length {iv.interval_s} s, but the meter is configured for "
                f"{meter.load_profile_interval_s} s",
            )
        max_wh = max_power_w * iv.interval_s / 3600
        if iv.energy_wh < 0:
            raise FrameRejected("impossible_value", f"{where}: negative energy {iv.energy_wh} Wh")
        if iv.energy_wh > max_wh:
            raise FrameRejected(
                "impossible_value",
                f"{where}: {iv.energy_wh} Wh exceeds {max_wh:.0f} Wh "
                f"({PHYSICAL_LIMIT_FACTOR} × the {meter.max_power_w:.0f} W rating for {iv.interval_s} s)",
            )
    for rv in content.registers:
        where = f"{rv.obis} at {rv.read_at.isoformat()}"
        if not 0 <= rv.energy_wh <= MAX_REGISTER_WH:
            raise FrameRejected("impossible_value", f"{where}: register {rv.energy_wh} Wh outside 0..1 TWh")
    for inst in content.instants:
        where = f"{inst.obis} at {inst.read_at.isoformat()}"
        value = inst.value
        if not math.isfinite(value):
            raise FrameRejected("impossible_value", f"{where}: value is {value}")
        quantity = QUANTITIES[inst.obis]
        if inst.obis == RELAY_STATE:
            if value not in (0.0, 1.0):
                raise FrameRejected("impossible_value", f"{where}: relay state {value} is neither 0 nor 1")
            continue
        if value < 0:
            raise FrameRejected(
                "impossible_value", f"{where}: negative {quantity.name} {value} {quantity.unit}"
            )
        limit = {"V": MAX_VOLTAGE_V, "A": max_current_a, "W": max_power_w}.get(quantity.unit)
        if quantity.kind is Kind.INSTANT and limit is not None and value > limit:
            raise FrameRejected(
                "impossible_value", f"{where}: {quantity.name} {value} {quantity.unit} exceeds {limit:.0f}"
            )


def screen_uplink(
    content: UplinkContent,
    meter: MeterInfo,
    received_at: datetime,
    *,
    max_clock_skew_s: int,
    max_reading_age_days: int,
) -> None:
    """Every plausibility check of one decoded frame, in the documented order. Raises FrameRejected."""
    time_window(
        content, received_at, max_clock_skew_s=max_clock_skew_s, max_reading_age_days=max_reading_age_days
    )
    physical_limits(content, meter)
