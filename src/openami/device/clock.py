"""The meter's real-time clock: a quartz oscillator that runs a little fast or slow.

Time is kept as float epoch seconds (UTC) because the meter reads its clock on every step; datetimes are made
only at the edges. Between two settings the RTC reads

    meter_s = set_meter_s + (true_s - set_true_s) × (1 + drift_ppm / 1e6)

which, from commissioning with no setting, is "commissioned + true elapsed × (1 + ppm/1e6)".
"""

from __future__ import annotations

import math

MAX_DRIFT_PPM = 100_000.0  # 10 %: an oscillator further off than this is broken, not drifting


class DriftingClock:
    """An RTC set to `meter_s` at true instant `true_s`, drifting by `drift_ppm` (+ fast, - slow)."""

    __slots__ = ("base_meter_s", "base_true_s", "drift_ppm", "rate")

    def __init__(self, true_s: float, meter_s: float, drift_ppm: float = 0.0) -> None:
        if not math.isfinite(drift_ppm) or abs(drift_ppm) > MAX_DRIFT_PPM:
            raise ValueError(f"clock drift must be within ±{MAX_DRIFT_PPM:g} ppm, got {drift_ppm}")
        self.drift_ppm = drift_ppm
        self.rate = 1.0 + drift_ppm / 1e6  # meter seconds per true second
        self.base_true_s = float(true_s)
        self.base_meter_s = float(meter_s)

    def meter_s(self, true_s: float) -> float:
        """What the RTC shows at true instant `true_s` (epoch seconds)."""
        return self.base_meter_s + (true_s - self.base_true_s) * self.rate

    def set(self, true_s: float, meter_s: float) -> float:
        """Set the RTC to show `meter_s` at true instant `true_s`; returns what it showed before."""
        old = self.meter_s(true_s)
        self.base_true_s = float(true_s)
        self.base_meter_s = float(meter_s)
        return old
