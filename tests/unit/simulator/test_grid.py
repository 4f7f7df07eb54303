"""The grid around a fleet: site location, transformer sizing, front-end currents, check-meter flow."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from openami.simulator.grid import (
    check_meter_flow_w,
    check_meter_rated_current_a,
    front_end_currents_a,
    prepare_block,
    site_location,
    supply_voltage_v,
    transformer_rating_kva,
    utc_offsets_s,
)
from openami.simulator.households import Climate, Household


def test_site_location_comes_from_the_zone_table() -> None:
    lat, lon = site_location("Africa/Nairobi")
    assert lat == pytest.approx(-1.28, abs=0.01)
    assert lon == pytest.approx(36.82, abs=0.01)
    lat, lon = site_location("America/Sao_Paulo")
    assert lat < -20
    assert lon < -40


def test_zones_without_a_place_fall_back_to_their_offset() -> None:
    assert site_location("Etc/GMT-3") == (45.0, 45.0)  # POSIX sign: GMT-3 is three hours ahead of UTC


def test_unknown_zone_is_named() -> None:
    with pytest.raises(ValueError, match="Mars/Olympus"):
        site_location("Mars/Olympus")


def test_transformers_are_sized_for_their_customers() -> None:
    assert transformer_rating_kva(1) == 25
    assert transformer_rating_kva(50) == 160  # 50 × 2 kVA × 1.3 = 130
    assert transformer_rating_kva(10_000) == 1600
    assert check_meter_rated_current_a(160) * 3 * 230 >= 160_000 * 1.2


def test_currents_make_the_power_back() -> None:
    power_w = np.array([0.0, 2300.0, 6900.0])
    volts = np.array([230.0, 230.0, 230.0])
    phase_a, neutral_a = front_end_currents_a(power_w, volts, 0.9, 1)
    np.testing.assert_allclose(volts * phase_a * 0.9, power_w)
    np.testing.assert_array_equal(neutral_a, phase_a)
    phase3_a, neutral3_a = front_end_currents_a(power_w, volts, 0.9, 3)
    np.testing.assert_allclose(3 * volts * phase3_a * 0.9, power_w)
    assert np.all(neutral3_a < phase3_a + 1e-12)


def test_voltage_drops_under_load() -> None:
    volts = supply_voltage_v(235.0, np.array([0.0, 5000.0]), np.zeros(2), 1.0)
    np.testing.assert_allclose(volts, [235.0, 230.0])


def test_check_meter_flow_adds_losses_on_import_and_takes_them_on_export() -> None:
    flow = check_meter_flow_w(np.array([1000.0, -1000.0, 0.0]), 0.04, np.zeros(3))
    np.testing.assert_allclose(flow, [1040.0, -960.0, 0.0])


def test_utc_offsets_follow_dst() -> None:
    london = ZoneInfo("Europe/London")
    winter = int(datetime(2026, 1, 10, tzinfo=UTC).timestamp())
    assert utc_offsets_s(london, winter, 288, 300) == 0.0
    change_day = int(datetime(2026, 3, 29, tzinfo=UTC).timestamp())
    offsets = utc_offsets_s(london, change_day, 288, 300)
    assert isinstance(offsets, np.ndarray)
    assert offsets[0] == 0.0
    assert offsets[-1] == 3600.0


def test_block_energy_is_the_households_and_outages_cut_it() -> None:
    climate = Climate(51.5, 0.0, 1)
    households = [Household.draw(s, climate, solar_share=0.0) for s in range(3)]
    start = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp())
    cut = np.ones(288, dtype=bool)
    cut[100:150] = False
    block = prepare_block(
        seed=1,
        zone=ZoneInfo("UTC"),
        start_s=start,
        n_steps=288,
        step_s=300,
        households=households,
        phases=[1, 1, 3],
        transformer_of=[0, 0, 0],
        supplied=[None, cut, None],
        transformer_voltage_v=[233.0],
    )
    for i, household in enumerate(households):
        expected_w, _ = household.mean_power_w(start, 288, 300)
        measured_w = np.array([s.voltage_v * s.phase_current_a * s.power_factor for s in block.samples[i]])
        measured_w *= [1, 1, 3][i]
        if i == 1:
            expected_w = expected_w * cut
        np.testing.assert_allclose(measured_w, expected_w, rtol=1e-9)
        np.testing.assert_allclose(block.net_w[i], expected_w)
    np.testing.assert_allclose(block.transformer_net_w[0], block.net_w.sum(axis=0))
    assert all(220 < s.voltage_v < 245 for row in block.samples for s in row)
    assert block.times[1] - block.times[0] == 300.0
