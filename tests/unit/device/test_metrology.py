"""The front end's sample: validated once, and the power and energy that follow from it."""

from __future__ import annotations

import math

import pytest

from openami.device import Sample, active_power_w, energy_wh


def test_active_power_is_volts_times_amps_times_power_factor_per_phase() -> None:
    sample = Sample(230.0, 10.0, 10.0, power_factor=0.9)
    assert active_power_w(sample) == pytest.approx(2070.0)
    assert active_power_w(sample, phases=3) == pytest.approx(6210.0)


def test_energy_of_a_known_power_for_a_known_time() -> None:
    assert energy_wh(1000.0, 3600.0) == pytest.approx(1000.0)
    assert energy_wh(2400.0, 90.0) == pytest.approx(60.0)


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("voltage_v", {"voltage_v": -1.0}),
        ("voltage_v", {"voltage_v": math.nan}),
        ("phase_current_a", {"phase_current_a": -0.5}),
        ("phase_current_a", {"phase_current_a": math.inf}),
        ("neutral_current_a", {"neutral_current_a": -0.1}),
        ("power_factor", {"power_factor": 1.2}),
        ("power_factor", {"power_factor": -0.1}),
        ("export", {"export": "yes"}),
    ],
)
def test_a_sample_out_of_range_is_refused_naming_the_field(field: str, kwargs: dict[str, object]) -> None:
    values: dict[str, object] = {"voltage_v": 230.0, "phase_current_a": 1.0, "neutral_current_a": 1.0}
    values.update(kwargs)
    with pytest.raises(ValueError, match=f"Sample.{field}"):
        Sample(**values)  # type: ignore[arg-type]
