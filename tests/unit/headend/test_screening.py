"""Plausibility of decoded frames: physical limits and the time window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from openami.common.errors import FrameRejected
from openami.headend.codec import UplinkContent
from openami.headend.screening import screen_uplink
from openami.readings.interfaces import InstantValue, IntervalValue, MeterEvent, RegisterValue
from openami.registry.interfaces import MeterInfo

NOW = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
METER = MeterInfo(
    id=1,
    serial="SN0001",
    site_id=1,
    site_code="demo",
    timezone="UTC",
    phases=1,
    rated_current_a=60,
    service_rated_current_a=None,
    load_profile_interval_s=900,
    auth_key=bytes(32),
    installed_at=None,
    account_id=None,
    transformer_id=None,
)
MAX_WH_PER_15_MIN = 10 * 230 * 60 / 4  # 10 × 13 800 W for a quarter hour = 34 500 Wh


def screen(content: UplinkContent) -> None:
    screen_uplink(content, METER, NOW, max_clock_skew_s=300, max_reading_age_days=400)


def reason_of(content: UplinkContent) -> str:
    with pytest.raises(FrameRejected) as err:
        screen(content)
    return err.value.reason


def interval(
    energy_wh: int, start: datetime = NOW - timedelta(minutes=15), interval_s: int = 900
) -> IntervalValue:
    return IntervalValue("1-0:1.29.0", start, interval_s, energy_wh)


def test_plausible_frame_passes() -> None:
    screen(
        UplinkContent(
            "SN0001",
            NOW + timedelta(seconds=299),
            intervals=[interval(int(MAX_WH_PER_15_MIN))],
            registers=[RegisterValue("1-0:1.8.0", NOW, 10**9)],
            instants=[
                InstantValue("1-0:32.7.0", NOW, 460.0),
                InstantValue("1-0:31.7.0", NOW, 600.0),
                InstantValue("0-0:96.3.10", NOW, 0.0),
            ],
            events=[MeterEvent("power_up", NOW - timedelta(days=399), 1)],
        )
    )


@pytest.mark.parametrize(
    "content",
    [
        UplinkContent("SN0001", NOW, intervals=[interval(-1)]),
        UplinkContent("SN0001", NOW, intervals=[interval(int(MAX_WH_PER_15_MIN) + 1)]),
        UplinkContent("SN0001", NOW, intervals=[interval(1, NOW - timedelta(minutes=30), 1800)]),
        UplinkContent("SN0001", NOW, registers=[RegisterValue("1-0:1.8.0", NOW, -5)]),
        UplinkContent("SN0001", NOW, registers=[RegisterValue("1-0:1.8.0", NOW, 10**12 + 1)]),
        UplinkContent("SN0001", NOW, instants=[InstantValue("1-0:32.7.0", NOW, 461.0)]),
        UplinkContent("SN0001", NOW, instants=[InstantValue("1-0:31.7.0", NOW, 601.0)]),
        UplinkContent("SN0001", NOW, instants=[InstantValue("1-0:1.7.0", NOW, -1.0)]),
        UplinkContent("SN0001", NOW, instants=[InstantValue("1-0:1.7.0", NOW, float("nan"))]),
        UplinkContent("SN0001", NOW, instants=[InstantValue("0-0:96.3.10", NOW, 0.5)]),
    ],
    ids=[
        "negative-energy",
        "beyond-10x-rating",
        "interval-length-differs-from-registry",
        "negative-register",
        "register-beyond-1-TWh",
        "voltage",
        "current",
        "negative-power",
        "nan",
        "relay-neither-0-nor-1",
    ],
)
def test_impossible_values(content: UplinkContent) -> None:
    assert reason_of(content) == "impossible_value"


@pytest.mark.parametrize(
    "content",
    [
        UplinkContent("SN0001", NOW + timedelta(seconds=301), registers=[RegisterValue("1-0:1.8.0", NOW, 1)]),
        UplinkContent(
            "SN0001", NOW, intervals=[interval(1, NOW - timedelta(minutes=5))]
        ),  # ends 10 min ahead
        UplinkContent("SN0001", NOW, registers=[RegisterValue("1-0:1.8.0", NOW + timedelta(hours=1), 1)]),
        UplinkContent("SN0001", NOW, instants=[InstantValue("1-0:32.7.0", NOW - timedelta(days=401), 230.0)]),
        UplinkContent("SN0001", NOW, events=[MeterEvent("power_up", NOW + timedelta(days=1), 1)]),
        UplinkContent(
            "SN0001", NOW - timedelta(days=400, seconds=1), registers=[RegisterValue("1-0:1.8.0", NOW, 1)]
        ),
    ],
    ids=[
        "meter-clock-ahead",
        "interval-not-closed",
        "register-ahead",
        "too-old",
        "event-ahead",
        "meter-time-old",
    ],
)
def test_time_out_of_range(content: UplinkContent) -> None:
    assert reason_of(content) == "time_out_of_range"


def test_time_is_checked_before_values() -> None:
    content = UplinkContent("SN0001", NOW + timedelta(days=1), intervals=[interval(-1)])
    assert reason_of(content) == "time_out_of_range"
