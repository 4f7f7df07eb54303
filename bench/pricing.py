"""The pricing core's throughput: a time-of-use + tiered tariff over a year of 15-minute intervals per meter,
against a plain numpy sum of the same arrays (the floor no pricing can beat)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from openami.tariffs.calendar import utc_seconds
from openami.tariffs.native import parse_tariff
from openami.tariffs.pricing import Load, bill_periods, month_spans

YEAR = 2026
TOU_TIERED = {
    "name": "bench TOU + inclining tiers",
    "currency": "USD",
    "timezone": "America/Los_Angeles",
    "holidays": {"country": "US"},
    "periods": ["peak", "off_peak"],
    "seasons": {"summer": [["06-01", "09-30"]], "winter": [["10-01", "05-31"]]},
    "schedules": {
        season: {
            "weekday": {"00:00": "off_peak", "16:00": "peak", "21:00": "off_peak"},
            "weekend": {"00:00": "off_peak"},
        }
        for season in ("summer", "winter")
    },
    "energy": {
        "summer/peak": [0.50, 0.60],
        "summer/off_peak": [0.30, 0.40],
        "winter/peak": [0.40, 0.50],
        "winter/off_peak": [0.25, 0.35],
    },
    "tiers": {"bounds_kwh": [350], "basis": "monthly", "allocation": "pro_rata"},
    "fixed": {"per_day": 0.40},
}


@dataclass(frozen=True)
class PricingFigures:
    meters: int
    intervals: int
    pricing_s: float
    sum_s: float

    @property
    def per_s(self) -> float:
        return self.intervals / self.pricing_s

    @property
    def sum_per_s(self) -> float:
        return self.intervals / self.sum_s

    @property
    def ratio(self) -> float:
        return self.per_s / self.sum_per_s


def run(meters: int) -> PricingFigures:
    from datetime import datetime  # noqa: PLC0415
    from zoneinfo import ZoneInfo  # noqa: PLC0415

    tariff = parse_tariff(TOU_TIERED)
    step = 900
    first = utc_seconds(datetime(YEAR, 1, 1, tzinfo=ZoneInfo(tariff.timezone)))
    count = 365 * 96
    starts = first + step * np.arange(count, dtype=np.int64)
    rng = np.random.default_rng(7)
    loads = [
        Load(starts, rng.integers(0, 600_000, size=count, dtype=np.int64), step)  # up to 0.6 kWh per 15 min
        for _ in range(meters)
    ]
    spans = month_spans(YEAR)
    bill_periods(tariff, loads[0], spans)  # warm: the calendar of the grid is computed once for all meters
    t0 = time.perf_counter()
    for load in loads:
        bill_periods(tariff, load, spans)
    pricing = time.perf_counter() - t0
    t0 = time.perf_counter()
    for load in loads:
        int(load.import_mwh.sum())
    plain = time.perf_counter() - t0
    return PricingFigures(meters, meters * count, pricing, plain)
