"""Screening before storage: what can be true passes, the rest is counted by reason (no database needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from openami.common.errors import NotFoundError, ValidationError
from openami.common.obis import ACTIVE_IMPORT_INTERVAL
from openami.readings.interfaces import IngestResult, IntervalValue, MeterBatch, Source
from openami.readings.screening import IMPOSSIBLE_RATING_FACTOR, screen_batch
from openami.registry.interfaces import MeterInfo

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
Q = timedelta(minutes=15)
RECEIVED = T0 + timedelta(hours=1)
SKEW = timedelta(minutes=15)
METER = MeterInfo(
    id=7,
    serial="SN7",
    site_id=1,
    site_code="NBO",
    timezone="Africa/Nairobi",
    phases=1,
    rated_current_a=60,
    service_rated_current_a=None,
    load_profile_interval_s=900,
    auth_key=b"k" * 32,
    installed_at=None,
    account_id=None,
    transformer_id=None,
)
LIMIT_WH = IMPOSSIBLE_RATING_FACTOR * METER.max_power_w * 900 / 3600  # 34 500 Wh in 15 min


def _screen(*values: IntervalValue) -> tuple[list[IntervalValue], dict[str, int]]:
    result = IngestResult()
    accepted = screen_batch(
        MeterBatch(METER.id, RECEIVED, Source.PUSH, intervals=list(values)),
        lambda meter_id: METER,
        result,
        max_clock_skew=SKEW,
        max_reading_age=timedelta(days=400),
    )
    assert accepted is not None
    return accepted.intervals, result.rejected


def _iv(start: datetime, energy_wh: int = 100, interval_s: int = 900, obis: str = ACTIVE_IMPORT_INTERVAL):
    return IntervalValue(obis, start, interval_s, energy_wh)


def test_possible_values_pass_whatever_their_zone_and_at_the_limits() -> None:
    nairobi = timezone(timedelta(hours=3))
    last_start = RECEIVED + SKEW - Q  # ends exactly at the head-end's clock plus the allowed skew
    values = [
        _iv(T0, 0),
        _iv(T0 + Q, int(LIMIT_WH)),
        _iv((T0 + 2 * Q).astimezone(nairobi)),
        _iv(last_start),
    ]
    accepted, rejected = _screen(*values)
    assert accepted == values
    assert rejected == {}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (_iv(T0, -1), "negative_energy"),
        (_iv(T0, int(LIMIT_WH) + 1), "beyond_rating"),
        (_iv(T0 + timedelta(microseconds=1)), "misaligned_interval"),
        (_iv((T0 + timedelta(minutes=7)).astimezone(timezone(timedelta(hours=3)))), "misaligned_interval"),
        (_iv(T0, interval_s=1800), "interval_length"),
        (_iv(RECEIVED + Q), "time_out_of_range"),  # would end 15 min after the clock plus the skew
        (_iv(RECEIVED - timedelta(days=401)), "time_out_of_range"),
        (_iv(T0.replace(tzinfo=None)), "time_out_of_range"),
        (_iv(T0, obis="1-0:1.8.0"), "unknown_obis"),
    ],
)
def test_each_impossible_value_is_rejected_with_its_reason(value: IntervalValue, reason: str) -> None:
    good = _iv(T0 - Q)
    accepted, rejected = _screen(value, good)
    assert accepted == [good]
    assert rejected == {reason: 1}


def test_a_batch_of_an_unknown_meter_is_counted_whole() -> None:
    def unknown(meter_id: int) -> MeterInfo:
        raise NotFoundError(f"no meter with id {meter_id}")

    result = IngestResult()
    batch = MeterBatch(99, RECEIVED, Source.PUSH, intervals=[_iv(T0), _iv(T0 + Q)])
    assert (
        screen_batch(batch, unknown, result, max_clock_skew=SKEW, max_reading_age=timedelta(days=1)) is None
    )
    assert result.rejected == {"unknown_meter": 2}


def test_a_batch_that_is_not_a_meters_is_a_caller_error() -> None:
    batch = MeterBatch(METER.id, RECEIVED, Source.ESTIMATE, intervals=[_iv(T0)])
    with pytest.raises(ValidationError, match="not a meter's"):
        screen_batch(batch, lambda m: METER, IngestResult(), max_clock_skew=SKEW, max_reading_age=SKEW)
