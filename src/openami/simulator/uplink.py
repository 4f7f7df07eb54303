"""What a simulated meter puts in its frames: its profile entries, registers, instantaneous values and events,
as the values the codec encodes."""

from __future__ import annotations

from openami.common.obis import ACTIVE_EXPORT_INTERVAL, ACTIVE_IMPORT_INTERVAL
from openami.device import Meter, ProfileEntry
from openami.headend.codec import UplinkContent
from openami.readings.interfaces import InstantValue, IntervalValue, MeterEvent, RegisterValue


def profile_intervals(entries: list[ProfileEntry], captures_export: bool) -> list[IntervalValue]:
    """Import intervals (1-0:1.29.0) for every entry, and export intervals (1-0:2.29.0) when the meter
    captures export (rooftop PV behind it, or a check meter)."""
    out = []
    for e in entries:
        out.append(
            IntervalValue(ACTIVE_IMPORT_INTERVAL, e.interval_start, e.interval_s, e.import_wh, e.status)
        )
        if captures_export:
            out.append(
                IntervalValue(ACTIVE_EXPORT_INTERVAL, e.interval_start, e.interval_s, e.export_wh, e.status)
            )
    return out


def push_content(
    meter: Meter, true_now_s: float, after_sequence: int, captures_export: bool
) -> UplinkContent:
    """The periodic push: entries closed since the last push, registers, instants and events numbered above
    `after_sequence`, all stamped by the meter's clock at true instant `true_now_s` (epoch seconds)."""
    meter_time = meter.meter_time(true_now_s)
    events = [
        MeterEvent(code=e.code.value, occurred_at=e.occurred_at, sequence=e.sequence, detail=e.detail)
        for e in meter.events_since(after_sequence)
    ]
    return UplinkContent(
        serial=meter.serial,
        meter_time=meter_time,
        intervals=profile_intervals(meter.take_new_profile_entries(), captures_export),
        registers=[RegisterValue(o, meter_time, wh) for o, wh in meter.registers().items()],
        instants=[InstantValue(o, meter_time, v) for o, v in meter.instantaneous().items()],
        events=events,
    )


def reply_content(
    meter: Meter,
    true_now_s: float,
    request_id: str,
    intervals: list[IntervalValue],
    *,
    with_instants: bool = False,
) -> UplinkContent:
    """A reply to command `request_id`: the given intervals and the registers (so a reply is never empty and
    shows the meter's state after the command), plus the instantaneous values (relay state) when asked."""
    meter_time = meter.meter_time(true_now_s)
    return UplinkContent(
        serial=meter.serial,
        meter_time=meter_time,
        intervals=intervals,
        registers=[RegisterValue(o, meter_time, wh) for o, wh in meter.registers().items()],
        instants=[InstantValue(o, meter_time, v) for o, v in meter.instantaneous().items()]
        if with_instants
        else [],
        request_id=request_id,
    )
