"""Helpers for the device tests: samples of a known power, stepping through a span."""

from __future__ import annotations

from datetime import UTC, datetime

from openami.device import Meter, Sample

MONDAY = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday, midnight UTC
VOLTAGE_V = 250.0


def sample_of(power_w: float, *, export: bool = False, neutral_a: float | None = None) -> Sample:
    """A unity power factor sample drawing `power_w` at 250 V."""
    current_a = power_w / VOLTAGE_V
    return Sample(VOLTAGE_V, current_a, current_a if neutral_a is None else neutral_a, 1.0, export)


def run_steps(meter: Meter, start_s: float, end_s: float, sample: Sample, step_s: float = 300.0) -> None:
    """Step `meter` through true `[start_s, end_s)` in steps of `step_s` seconds."""
    t = start_s
    while t < end_s:
        duration = min(step_s, end_s - t)
        meter.step(t, duration, sample)
        t += duration
