"""Screening of what meters report, before anything is stored: values that cannot be true are rejected.

A value is impossible when its meter is unknown, its OBIS code is not a quantity of its kind, its timestamp is
naive, too old or ahead of the head-end's clock by more than the allowed skew, an interval is not the meter's
load-profile length or off its grid, or an energy or power is negative or beyond `IMPOSSIBLE_RATING_FACTOR`
times the service rating. Each rejection is counted under a stable reason code in `IngestResult.rejected`
and logged once per batch with an example; the VEE rules judge only what passes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog

from openami.common.clock import ensure_aware
from openami.common.errors import NotFoundError, ValidationError
from openami.common.obis import QUANTITIES, Kind
from openami.readings.interfaces import (
    IngestResult,
    InstantValue,
    IntervalValue,
    MeterBatch,
    MeterEvent,
    RegisterValue,
    Source,
)
from openami.registry.interfaces import MeterInfo

log = structlog.get_logger(__name__)

METER_SOURCES = frozenset({Source.PUSH, Source.REREAD, Source.POLL, Source.IMPORT})
# How far beyond the service rating a value stops being a spike to flag and becomes physically impossible.
IMPOSSIBLE_RATING_FACTOR = 10
INTERVAL_OBIS = frozenset(q.obis for q in QUANTITIES.values() if q.kind is Kind.INTERVAL)
_UNKNOWN_METER = "unknown_meter"


@dataclass(slots=True)
class Accepted:
    """One batch's values that passed the screening, with its meter."""

    batch: MeterBatch
    info: MeterInfo
    intervals: list[IntervalValue] = field(default_factory=list)
    registers: list[RegisterValue] = field(default_factory=list)
    instants: list[InstantValue] = field(default_factory=list)
    events: list[MeterEvent] = field(default_factory=list)


def screen_batch(
    batch: MeterBatch,
    meter_info: Callable[[int], MeterInfo],
    result: IngestResult,
    *,
    max_clock_skew: timedelta,
    max_reading_age: timedelta,
) -> Accepted | None:
    """Keep the values that can be true; count the others in `result.rejected` by reason.

    Raises ValidationError for a batch that is not a meter's (wrong source, naive `received_at`); returns
    None, everything counted as rejected, when `meter_info` knows no such meter.
    """
    if batch.source not in METER_SOURCES:
        raise ValidationError(
            f"ingest stores what meters report; source {batch.source.value!r} is not a meter's",
            f"batch of meter {batch.meter_id}",
        )
    received_at = ensure_aware(batch.received_at, f"received_at of the batch of meter {batch.meter_id}")
    rejected: Counter[str] = Counter()
    try:
        info = meter_info(batch.meter_id)
    except NotFoundError:
        total = len(batch.intervals) + len(batch.registers) + len(batch.instants) + len(batch.events)
        rejected[_UNKNOWN_METER] += total
        _count_rejections(result, rejected, batch, f"no meter with id {batch.meter_id}")
        return None
    earliest, latest = received_at - max_reading_age, received_at + max_clock_skew
    out = Accepted(batch, info)
    first_detail = ""
    step = info.load_profile_interval_s
    limit_wh = IMPOSSIBLE_RATING_FACTOR * info.max_power_w * step / 3600
    lowest_s, highest_s = earliest.timestamp(), latest.timestamp() - step  # bounds of interval starts
    for v in batch.intervals:
        start = v.interval_start
        # The common case, every check passed, decided without a call per value.
        if start.tzinfo is UTC and v.interval_s == step and v.obis in INTERVAL_OBIS:
            start_s = start.timestamp()
            if lowest_s <= start_s <= highest_s and not start_s % step and 0 <= v.energy_wh <= limit_wh:
                out.intervals.append(v)
                continue
        reason = _interval_problem(v, step, limit_wh, (lowest_s, highest_s))
        if reason:
            rejected[reason[0]] += 1
            first_detail = first_detail or reason[1]
        else:
            out.intervals.append(v)
    for r in batch.registers:
        reason = _register_problem(r, earliest, latest)
        if reason:
            rejected[reason[0]] += 1
            first_detail = first_detail or reason[1]
        else:
            out.registers.append(r)
    for i in batch.instants:
        reason = _instant_problem(i, info, earliest, latest)
        if reason:
            rejected[reason[0]] += 1
            first_detail = first_detail or reason[1]
        else:
            out.instants.append(i)
    for e in batch.events:
        if not _aware(e.occurred_at) or not earliest <= e.occurred_at <= latest:
            rejected["time_out_of_range"] += 1
            first_detail = first_detail or f"event {e.code} #{e.sequence} at {e.occurred_at.isoformat()}"
        else:
            out.events.append(e)
    _count_rejections(result, rejected, batch, first_detail)
    return out


def _count_rejections(result: IngestResult, rejected: Counter[str], batch: MeterBatch, detail: str) -> None:
    if not rejected:
        return
    for reason, count in rejected.items():
        result.rejected[reason] = result.rejected.get(reason, 0) + count
    log.warning("readings_rejected", meter_id=batch.meter_id, reasons=dict(rejected), example=detail)


def _interval_problem(
    v: IntervalValue, step: int, limit_wh: float, bounds_s: tuple[float, float]
) -> tuple[str, str] | None:
    """Why an interval value cannot be true, or None. The common, valid case builds no message."""
    start = v.interval_start
    if v.obis not in INTERVAL_OBIS:
        return "unknown_obis", f"interval {v.obis}: not a load-profile quantity"
    if not _aware(start):
        return "time_out_of_range", f"interval {v.obis} at {start.isoformat()}: naive timestamp"
    start_s = start.timestamp()
    if v.interval_s != step:
        code, why = "interval_length", f"{v.interval_s} s long, the meter's profile is {step} s"
    elif start_s % step:
        code, why = "misaligned_interval", f"not on the {step} s grid"
    elif not bounds_s[0] <= start_s <= bounds_s[1]:
        code, why = "time_out_of_range", "too old, or ends after the head-end's clock plus the allowed skew"
    elif v.energy_wh < 0:
        code, why = "negative_energy", f"{v.energy_wh} Wh"
    elif v.energy_wh > limit_wh:
        code, why = (
            "beyond_rating",
            f"{v.energy_wh} Wh > {limit_wh:.0f} Wh ({IMPOSSIBLE_RATING_FACTOR}× the rating)",
        )
    else:
        return None
    return code, f"interval {v.obis} at {start.isoformat()}: {why}"


def _register_problem(r: RegisterValue, earliest: datetime, latest: datetime) -> tuple[str, str] | None:
    where = f"register {r.obis} at {r.read_at.isoformat()}"
    quantity = QUANTITIES.get(r.obis)
    if quantity is None or quantity.kind is not Kind.REGISTER:
        return "unknown_obis", f"{where}: {r.obis} is not a cumulative register"
    if not _aware(r.read_at) or not earliest <= r.read_at <= latest:
        return "time_out_of_range", f"{where}: outside [{earliest.isoformat()}, {latest.isoformat()}]"
    if r.energy_wh < 0:
        return "negative_energy", f"{where}: {r.energy_wh} Wh"
    return None


def _instant_problem(
    i: InstantValue, info: MeterInfo, earliest: datetime, latest: datetime
) -> tuple[str, str] | None:
    where = f"instant {i.obis} at {i.read_at.isoformat()}"
    quantity = QUANTITIES.get(i.obis)
    if quantity is None or quantity.kind not in (Kind.INSTANT, Kind.STATE):
        return "unknown_obis", f"{where}: {i.obis} is not an instantaneous value"
    if not _aware(i.read_at) or not earliest <= i.read_at <= latest:
        return "time_out_of_range", f"{where}: outside [{earliest.isoformat()}, {latest.isoformat()}]"
    if not math.isfinite(i.value) or i.value < 0:
        return "impossible_value", f"{where}: {i.value}"
    if quantity.kind is Kind.STATE and i.value not in (0, 1):
        return "impossible_value", f"{where}: state {i.value} is neither 0 nor 1"
    if quantity.unit == "W" and i.value > IMPOSSIBLE_RATING_FACTOR * info.max_power_w:
        return "beyond_rating", f"{where}: {i.value} W > {IMPOSSIBLE_RATING_FACTOR}× the service rating"
    return None


def _aware(instant: datetime) -> bool:
    return instant.tzinfo is not None and instant.utcoffset() is not None
