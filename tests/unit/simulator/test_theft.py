"""Thieves and honest changes: each attack transforms a customer's series as defined, and only from its start day."""

from __future__ import annotations

import numpy as np
import pytest

from openami.simulator.theft import (
    PHYSICAL_ATTACKS,
    SECONDS_PER_DAY,
    Attack,
    AttackOutcome,
    HonestChange,
    TamperCode,
    apply_attack,
    apply_honest_change,
    capped,
    h2_zero_window,
    h5_daily_mean,
    h6_reversed_day,
    intermittent,
)

DAYS, STEPS = 10, 48  # 30-min readings
START = 4


def _load(seed: int = 3) -> np.ndarray:
    """A plausible customer: a daily shape with an evening peak, different every day, always above zero."""
    rng = np.random.default_rng(seed)
    hour = np.arange(STEPS) / 2
    shape = 60 + 200 * np.exp(-0.5 * ((hour - 19) / 2) ** 2) + 80 * np.exp(-0.5 * ((hour - 7) / 1) ** 2)
    return shape[None, :] * rng.uniform(0.6, 1.4, (DAYS, STEPS))


def _outcome(attack: Attack, seed: int = 0) -> AttackOutcome:
    return apply_attack(attack, _load(), START, np.random.default_rng(seed))


@pytest.mark.parametrize("attack", list(Attack))
def test_every_attack_starts_on_its_start_day_and_not_before(attack: Attack) -> None:
    true = _load()
    reported = _outcome(attack).reported_wh
    np.testing.assert_array_equal(reported[:START], true[:START])
    assert not np.allclose(reported[START:], true[START:]), (
        f"{attack} left the days after its start unchanged"
    )
    assert reported.shape == true.shape


@pytest.mark.parametrize("attack", list(Attack))
def test_the_true_series_is_left_untouched(attack: Attack) -> None:
    true = _load()
    apply_attack(attack, true, START, np.random.default_rng(0))
    np.testing.assert_array_equal(true, _load())


def test_h1_scales_every_reading_and_the_daily_total_by_one_factor() -> None:
    outcome = _outcome(Attack.H1_SCALED)
    factor = outcome.parameters["factor"]
    assert 0.1 <= factor <= 0.8
    np.testing.assert_allclose(outcome.reported_wh[START:], factor * _load()[START:])
    np.testing.assert_allclose(outcome.reported_wh.sum(axis=1)[START:], factor * _load().sum(axis=1)[START:])


def test_h2_zeroes_a_window_of_each_day_and_keeps_the_rest() -> None:
    firsts = np.full(DAYS, 10)
    lengths = np.full(DAYS, 8)
    reported = h2_zero_window(_load(), START, firsts, lengths)
    assert np.all(reported[START:, 10:18] == 0)
    np.testing.assert_array_equal(reported[START:, :10], _load()[START:, :10])
    np.testing.assert_array_equal(reported[START:, 18:], _load()[START:, 18:])
    drawn = _outcome(Attack.H2_ZERO_WINDOW).reported_wh[START:]
    zero_steps = (drawn == 0).sum(axis=1)
    assert np.all((zero_steps >= 8) & (zero_steps <= 40)), "windows are 4 to 20 h of 30-min readings"


def test_h3_multiplies_each_reading_by_its_own_factor() -> None:
    ratio = _outcome(Attack.H3_RANDOM_SCALED).reported_wh[START:] / _load()[START:]
    assert ratio.min() >= 0.1
    assert ratio.max() <= 0.8
    assert np.unique(np.round(ratio, 9)).size > ratio.size // 2


def test_h4_reports_the_days_mean_scaled_per_reading() -> None:
    reported = _outcome(Attack.H4_SCALED_DAILY_MEAN).reported_wh[START:]
    ratio = reported / _load()[START:].mean(axis=1, keepdims=True)
    assert ratio.min() >= 0.1
    assert ratio.max() <= 0.8
    assert np.unique(np.round(ratio, 9)).size > ratio.size // 2


def test_h5_reports_the_days_mean_and_keeps_the_daily_total() -> None:
    true = _load()
    reported = h5_daily_mean(true, START)
    assert np.all(reported[START:] == reported[START:, :1])
    np.testing.assert_allclose(reported.sum(axis=1), true.sum(axis=1))


def test_h6_reverses_each_day_and_keeps_the_daily_total() -> None:
    true = _load()
    reported = h6_reversed_day(true, START)
    np.testing.assert_array_equal(reported[START:, 0], true[START:, -1])
    np.testing.assert_array_equal(reported[START:, -1], true[START:, 0])
    np.testing.assert_allclose(reported.sum(axis=1), true.sum(axis=1))
    assert not np.allclose(reported[START:], true[START:])


def test_full_bypass_reports_almost_nothing_while_the_load_goes_on() -> None:
    outcome = _outcome(Attack.FULL_BYPASS)
    assert outcome.reported_wh[START:].sum() <= 0.03 * _load()[START:].sum()
    assert outcome.parameters["residual_share"] <= 0.03


def test_capped_readings_never_exceed_the_cap() -> None:
    true = _load()
    reported = capped(true, START, 100.0)
    np.testing.assert_array_equal(reported[START:], np.minimum(true[START:], 100.0))
    assert true[:START].max() > 100.0
    np.testing.assert_array_equal(reported[:START], true[:START])
    drawn = _outcome(Attack.CAPPED)
    assert drawn.reported_wh[START:].max() <= drawn.parameters["cap_wh"]
    assert np.quantile(true[:START], 0.2) <= drawn.parameters["cap_wh"] <= np.quantile(true[:START], 0.6)


def test_intermittent_theft_hits_some_days_only() -> None:
    active = np.zeros(DAYS, dtype=bool)
    active[[1, 5, 7]] = True
    reported = intermittent(_load(), START, active, 0.25)
    day_ratio = reported.sum(axis=1) / _load().sum(axis=1)
    np.testing.assert_allclose(day_ratio, [1, 1, 1, 1, 1, 0.25, 1, 0.25, 1, 1])
    drawn = _outcome(Attack.INTERMITTENT)
    ratios = np.round(drawn.reported_wh.sum(axis=1) / _load().sum(axis=1), 9)
    assert ratios[START] == round(drawn.parameters["factor"], 9), "the attack is active on its start day"
    assert set(ratios[START:]) <= {1.0, round(drawn.parameters["factor"], 9)}


def test_meter_reversal_registers_the_load_as_export() -> None:
    outcome = _outcome(Attack.METER_REVERSAL)
    np.testing.assert_array_equal(outcome.reported_wh[START:], -_load()[START:])
    codes = [e.code for e in outcome.episodes]
    assert codes == [TamperCode.TERMINAL_COVER_OPENED, TamperCode.REVERSE_CURRENT]


@pytest.mark.parametrize(
    ("attack", "lasting_code"),
    [
        (Attack.PHASE_BYPASS, TamperCode.CURRENT_MISMATCH),
        (Attack.NEUTRAL_EARTH_RETURN, TamperCode.NEUTRAL_MISSING),
    ],
)
def test_wiring_attacks_open_the_terminal_cover_the_evening_before_and_raise_a_lasting_event(
    attack: Attack, lasting_code: TamperCode
) -> None:
    outcome = _outcome(attack)
    cover, lasting = outcome.episodes
    assert cover.code is TamperCode.TERMINAL_COVER_OPENED
    assert cover.end_s is not None
    assert START * SECONDS_PER_DAY - 6 * 3600 <= cover.start_s < cover.end_s
    assert cover.start_s < START * SECONDS_PER_DAY
    assert lasting == type(lasting)(START * SECONDS_PER_DAY, None, lasting_code)
    share = outcome.reported_wh[START:].sum() / _load()[START:].sum()
    assert share <= 0.6


def test_a_magnet_lowers_the_readings_exactly_while_its_events_last() -> None:
    outcome = _outcome(Attack.MAGNET)
    step_s = SECONDS_PER_DAY // STEPS
    under = np.zeros(DAYS * STEPS, dtype=bool)
    for episode in outcome.episodes:
        assert episode.code is TamperCode.MAGNETIC_FIELD
        assert episode.end_s is not None
        under[episode.start_s // step_s : episode.end_s // step_s] = True
    ratio = (outcome.reported_wh / _load()).ravel()
    np.testing.assert_allclose(ratio[under], outcome.parameters["registered_share"])
    np.testing.assert_allclose(ratio[~under], 1.0)
    assert len(outcome.episodes) == DAYS - START, "one magnet episode each evening after the start"


def test_cover_opening_is_recorded_and_lowers_the_registered_energy() -> None:
    outcome = _outcome(Attack.COVER_OPENING)
    assert [e.code for e in outcome.episodes] == [TamperCode.METER_COVER_OPENED]
    np.testing.assert_allclose(
        outcome.reported_wh[START:], outcome.parameters["registered_share"] * _load()[START:]
    )


def test_data_attacks_leave_no_tamper_events() -> None:
    for attack in set(Attack) - PHYSICAL_ATTACKS:
        assert _outcome(attack).episodes == (), attack


def test_the_same_generator_seed_gives_the_same_attack() -> None:
    for attack in Attack:
        a, b = _outcome(attack, seed=9), _outcome(attack, seed=9)
        np.testing.assert_array_equal(a.reported_wh, b.reported_wh)
        assert a.episodes == b.episodes


def test_honest_changes_alter_the_true_load_as_described() -> None:
    true = _load()
    holiday, p = apply_honest_change(HonestChange.HOLIDAY, true, START, np.random.default_rng(1))
    ratio = holiday.sum(axis=1) / true.sum(axis=1)
    away = int(p["days"])
    np.testing.assert_allclose(ratio[START : START + away], p["factor"])
    np.testing.assert_allclose(ratio[:START], 1.0)

    more, p = apply_honest_change(HonestChange.NEW_APPLIANCE, true, START, np.random.default_rng(1))
    np.testing.assert_allclose(more[START:] - true[START:], p["added_w"] * 0.5)  # W over 30 min, in Wh
    np.testing.assert_array_equal(more[:START], true[:START])

    empty, p = apply_honest_change(HonestChange.VACANCY, true, START, np.random.default_rng(1))
    assert empty[START:].sum() <= 0.05 * true[START:].sum()

    saving, p = apply_honest_change(HonestChange.EFFICIENCY, true, START, np.random.default_rng(1))
    np.testing.assert_allclose(saving[START:], p["factor"] * true[START:])
    assert 0.6 <= p["factor"] <= 0.85


def test_bad_arguments_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"start_day must be within 0\.\.10"):
        apply_attack(Attack.H1_SCALED, _load(), 11, np.random.default_rng(0))
    with pytest.raises(ValueError, match="days × steps-per-day"):
        apply_attack(Attack.H5_DAILY_MEAN, _load().ravel(), 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="divide a day"):
        apply_attack(Attack.H1_SCALED, np.ones((3, 7)), 1, np.random.default_rng(0))
