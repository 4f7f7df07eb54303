"""The metrology front end: what the meter measures (voltage, phase and neutral current, power factor) and the
active power and energy that follow from it.

A `Sample` is held constant over one step. Validation happens once, when the sample is made, so the meter's
step stays cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SECONDS_PER_HOUR = 3600.0


def _check_range(name: str, value: float, low: float, high: float = math.inf) -> None:
    if not (low <= value <= high) or not math.isfinite(value):
        upper = "" if math.isinf(high) else f" and {high}"
        raise ValueError(f"Sample.{name} must be a finite number between {low}{upper}, got {value!r}")


@dataclass(frozen=True, slots=True)
class Sample:
    """What the front end measures, held constant for a step: voltage V, phase and neutral current A (RMS,
    never negative), power factor 0..1. `export` is True when energy flows to the grid (solar surplus).
    `magnetic_field_mt` is the field sensor's reading, mT (0 without a magnet near; see `device.tamper`)."""

    voltage_v: float
    phase_current_a: float
    neutral_current_a: float
    power_factor: float = 1.0
    export: bool = False
    magnetic_field_mt: float = 0.0

    def __post_init__(self) -> None:
        _check_range("voltage_v", self.voltage_v, 0.0)
        _check_range("phase_current_a", self.phase_current_a, 0.0)
        _check_range("neutral_current_a", self.neutral_current_a, 0.0)
        _check_range("power_factor", self.power_factor, 0.0, 1.0)
        _check_range("magnetic_field_mt", self.magnetic_field_mt, 0.0)
        if self.export not in (True, False):  # numpy's bool_ is welcome too
            raise ValueError(f"Sample.export must be True or False, got {self.export!r}")


def active_power_w(sample: Sample, phases: int = 1) -> float:
    """Active power W = V × I × pf per phase, times the number of phases (balanced load on 3 phases)."""
    return sample.voltage_v * sample.phase_current_a * sample.power_factor * phases


def energy_wh(power_w: float, duration_s: float) -> float:
    """Energy Wh of `power_w` held for `duration_s` seconds."""
    return power_w * duration_s / SECONDS_PER_HOUR
