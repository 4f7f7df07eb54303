"""Thieves and honest customers who change their habits, as transformations of one customer's energy series.

Pure numpy: every function takes one customer's interval energies as a days × steps-per-day array (Wh per
interval, UTC days) and returns a new array; nothing here reads a clock or a file. Randomness comes only from the
generator passed to `apply_attack` / `apply_honest_change`, so a seed reproduces every thief.

Thefts change what the meter *reports*; the customer goes on drawing the true load, which the transformer's check
meter still sees. The data attacks are those of Jokar, Arianpoo and Leung (2016), "Electricity theft detection in
AMI using customers' consumption patterns", IEEE Trans. Smart Grid 7(1), with x the true reading of an interval:

- h1  α·x, one α drawn from U(0.1, 0.8) for the whole attack;
- h2  0 inside a window of each day (its start and length, 4 to 20 h, drawn per day), x outside it;
- h3  γ_t·x, a new γ_t from U(0.1, 0.8) for every reading;
- h4  γ_t·mean(day), a new γ_t from U(0.1, 0.8) for every reading;
- h5  mean(day): the same daily total, spread flat;
- h6  the day's readings in reverse order: the same daily total, the shape mirrored.

Besides those: full bypass (a residual of at most 3 % of x is reported), capped readings (min(x, cap), the cap a
quantile 0.2–0.6 of the readings before the attack), intermittent theft (x·f on some days only, f from
U(0, 0.4)), meter reversal (−x: the energy is registered as export), and four physical attacks that the meter's
sensors can see (`TamperEpisode`): phase bypass (a jumper carries 40–90 % of the current past the meter),
neutral tampering with an earth return (the meter registers 0–30 %), magnets (the meter registers 10–50 % for a
few evening hours each day while the magnet is on), cover opening (the metrology is tampered with inside the
meter; it registers 30–70 % afterwards). Every attack leaves the days before `start_day` alone.

Honest changes alter the *true* load (so transformer and meter agree): a holiday away (7–28 days at 15–35 %), a
new appliance (a constant 80–400 W more from the start day on), vacancy (4–12 weeks at 0–5 %) and efficiency
improvements (60–85 % from the start day on). A fall in consumption is therefore not proof of theft.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

SECONDS_PER_DAY = 86_400


class Attack(enum.StrEnum):
    """How a thief changes what the meter reports; the value is the `attack` column of the labels file."""

    H1_SCALED = "h1"
    H2_ZERO_WINDOW = "h2"
    H3_RANDOM_SCALED = "h3"
    H4_SCALED_DAILY_MEAN = "h4"
    H5_DAILY_MEAN = "h5"
    H6_REVERSED_DAY = "h6"
    FULL_BYPASS = "full_bypass"
    CAPPED = "capped"
    INTERMITTENT = "intermittent"
    METER_REVERSAL = "meter_reversal"
    PHASE_BYPASS = "phase_bypass"
    NEUTRAL_EARTH_RETURN = "neutral_earth_return"
    MAGNET = "magnet"
    COVER_OPENING = "cover_opening"


PHYSICAL_ATTACKS = frozenset(
    {
        Attack.METER_REVERSAL,
        Attack.PHASE_BYPASS,
        Attack.NEUTRAL_EARTH_RETURN,
        Attack.MAGNET,
        Attack.COVER_OPENING,
    }
)
"""Attacks done with hands on the meter or its wiring, so a meter with tamper sensors records events for them."""


class HonestChange(enum.StrEnum):
    """A change in behaviour that is not theft; the value is the `attack` column of an honest label."""

    HOLIDAY = "holiday"
    NEW_APPLIANCE = "new_appliance"
    VACANCY = "vacancy"
    EFFICIENCY = "efficiency"


class TamperCode(enum.StrEnum):
    """What a tamper-sensing meter records (the `code` column of the events file)."""

    # Earth load or bypass: the phase and neutral currents differ (the device calls it "current_mismatch").
    CURRENT_MISMATCH = "current_mismatch"
    NEUTRAL_MISSING = "neutral_missing"  # current flows but the neutral path is gone (earth return)
    REVERSE_CURRENT = "reverse_current"  # energy flows out on a meter not allowed to export
    MAGNETIC_FIELD = "magnetic_field"
    METER_COVER_OPENED = "meter_cover_opened"
    TERMINAL_COVER_OPENED = "terminal_cover_opened"


@dataclass(frozen=True, slots=True)
class TamperEpisode:
    """One event a meter records: from `start_s` to `end_s` (seconds from the start of the series; `end_s` None
    when the condition still holds at the end of the series)."""

    start_s: int
    end_s: int | None
    code: TamperCode


@dataclass(frozen=True, slots=True)
class AttackOutcome:
    """What a thief makes the meter report, the events the meter's sensors see, and the drawn parameters."""

    reported_wh: FloatArray
    episodes: tuple[TamperEpisode, ...]
    parameters: dict[str, float]


def _checked(wh: FloatArray, start_day: int) -> FloatArray:
    wh = np.asarray(wh, dtype=np.float64)
    if wh.ndim != 2 or wh.shape[1] < 1:
        raise ValueError(f"energy must be a days × steps-per-day array, got shape {wh.shape}")
    if not 0 <= start_day <= wh.shape[0]:
        raise ValueError(f"start_day must be within 0..{wh.shape[0]} (the series' days), got {start_day}")
    return wh.copy()


def h1_scaled(wh: FloatArray, start_day: int, factor: float) -> FloatArray:
    """h1: every reading from `start_day` on multiplied by one `factor`."""
    out = _checked(wh, start_day)
    out[start_day:] *= factor
    return out


def h2_zero_window(
    wh: FloatArray, start_day: int, window_start_step: IntArray, window_steps: IntArray
) -> FloatArray:
    """h2: zero inside each day's window `[window_start_step, window_start_step + window_steps)` (one per day),
    from `start_day` on."""
    out = _checked(wh, start_day)
    steps = np.arange(out.shape[1])
    first = np.asarray(window_start_step)[:, None]
    inside = (steps >= first) & (steps < first + np.asarray(window_steps)[:, None])
    inside[:start_day] = False
    out[inside] = 0.0
    return out


def h3_random_scaled(wh: FloatArray, start_day: int, factors: FloatArray) -> FloatArray:
    """h3: each reading from `start_day` on multiplied by its own factor (`factors` has the shape of `wh`)."""
    out = _checked(wh, start_day)
    out[start_day:] *= np.asarray(factors)[start_day:]
    return out


def h4_scaled_daily_mean(wh: FloatArray, start_day: int, factors: FloatArray) -> FloatArray:
    """h4: each reading from `start_day` on replaced by the day's mean times its own factor."""
    out = _checked(wh, start_day)
    out[start_day:] = np.asarray(factors)[start_day:] * out[start_day:].mean(axis=1, keepdims=True)
    return out


def h5_daily_mean(wh: FloatArray, start_day: int) -> FloatArray:
    """h5: each reading from `start_day` on replaced by the day's mean (the daily total is kept)."""
    out = _checked(wh, start_day)
    out[start_day:] = out[start_day:].mean(axis=1, keepdims=True)
    return out


def h6_reversed_day(wh: FloatArray, start_day: int) -> FloatArray:
    """h6: each day's readings from `start_day` on in reverse order (the daily total is kept)."""
    out = _checked(wh, start_day)
    out[start_day:] = out[start_day:, ::-1]
    return out


def full_bypass(wh: FloatArray, start_day: int, residual_share: float) -> FloatArray:
    """The whole load is wired around the meter; it reports only `residual_share` (a few %) of it."""
    return h1_scaled(wh, start_day, residual_share)


def capped(wh: FloatArray, start_day: int, cap_wh: float) -> FloatArray:
    """Readings from `start_day` on never exceed `cap_wh`: min(x, cap)."""
    out = _checked(wh, start_day)
    out[start_day:] = np.minimum(out[start_day:], cap_wh)
    return out


def intermittent(wh: FloatArray, start_day: int, active_days: BoolArray, factor: float) -> FloatArray:
    """On the days flagged in `active_days` (from `start_day` on) readings are multiplied by `factor`."""
    out = _checked(wh, start_day)
    active = np.asarray(active_days, dtype=bool).copy()
    active[:start_day] = False
    out[active] *= factor
    return out


def meter_reversal(wh: FloatArray, start_day: int) -> FloatArray:
    """The meter is wired backwards: from `start_day` on it registers the import as export (−x)."""
    return h1_scaled(wh, start_day, -1.0)


def scaled_while(wh: FloatArray, start_day: int, active: BoolArray, factor: float) -> FloatArray:
    """Readings in the intervals flagged in `active` (days × steps, from `start_day` on) multiplied by `factor`;
    what a magnet on the meter does while it is there."""
    out = _checked(wh, start_day)
    flags = np.asarray(active, dtype=bool).copy()
    flags[:start_day] = False
    out[flags] *= factor
    return out


def _installed_at_s(start_day: int, rng: np.random.Generator) -> int:
    """When the thief works on the meter: the evening before the attack shows in the readings."""
    return max(0, start_day * SECONDS_PER_DAY - int(rng.integers(600, 6 * 3600)))


def _cover_episode(code: TamperCode, start_day: int, rng: np.random.Generator) -> TamperEpisode:
    opened_s = _installed_at_s(start_day, rng)
    return TamperEpisode(opened_s, opened_s + int(rng.integers(120, 1800)), code)


def _episodes_of_flags(flags: BoolArray, step_s: int, code: TamperCode) -> tuple[TamperEpisode, ...]:
    """One episode per run of True in the flattened `flags`; a run reaching the end stays open (end None)."""
    flat = np.asarray(flags, dtype=bool).ravel()
    edges = np.diff(np.concatenate(([0], flat.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return tuple(
        TamperEpisode(int(s) * step_s, None if e == flat.size else int(e) * step_s, code)
        for s, e in zip(starts, ends, strict=True)
    )


def apply_attack(
    attack: Attack, true_wh: FloatArray, start_day: int, rng: np.random.Generator
) -> AttackOutcome:
    """What `attack` makes a meter report from `start_day` on, with its parameters drawn from `rng` (ranges in the
    module docstring), and the events a tamper-sensing meter records for it (none for data attacks)."""
    wh = _checked(true_wh, start_day)
    days, steps_per_day = wh.shape
    if SECONDS_PER_DAY % steps_per_day:
        raise ValueError(f"steps per day must divide a day into whole seconds, got {steps_per_day}")
    step_s = SECONDS_PER_DAY // steps_per_day
    attack = Attack(attack)
    if attack is Attack.H1_SCALED:
        factor = float(rng.uniform(0.1, 0.8))
        return AttackOutcome(h1_scaled(wh, start_day, factor), (), {"factor": factor})
    if attack is Attack.H2_ZERO_WINDOW:
        hour_steps = max(1, 3600 // step_s)
        lengths = rng.integers(4 * hour_steps, 20 * hour_steps + 1, days).clip(1, steps_per_day)
        firsts = (rng.random(days) * (steps_per_day - lengths + 1)).astype(np.int64)
        return AttackOutcome(h2_zero_window(wh, start_day, firsts, lengths), (), {})
    if attack is Attack.H3_RANDOM_SCALED:
        return AttackOutcome(h3_random_scaled(wh, start_day, rng.uniform(0.1, 0.8, wh.shape)), (), {})
    if attack is Attack.H4_SCALED_DAILY_MEAN:
        return AttackOutcome(h4_scaled_daily_mean(wh, start_day, rng.uniform(0.1, 0.8, wh.shape)), (), {})
    if attack is Attack.H5_DAILY_MEAN:
        return AttackOutcome(h5_daily_mean(wh, start_day), (), {})
    if attack is Attack.H6_REVERSED_DAY:
        return AttackOutcome(h6_reversed_day(wh, start_day), (), {})
    if attack is Attack.FULL_BYPASS:
        residual = float(rng.uniform(0.0, 0.03))
        return AttackOutcome(full_bypass(wh, start_day, residual), (), {"residual_share": residual})
    if attack is Attack.CAPPED:
        before = wh[:start_day] if start_day else wh
        cap_wh = float(np.quantile(before, rng.uniform(0.2, 0.6)))
        return AttackOutcome(capped(wh, start_day, cap_wh), (), {"cap_wh": cap_wh})
    if attack is Attack.INTERMITTENT:
        day_share = float(rng.uniform(0.2, 0.6))
        active: BoolArray = np.asarray(rng.random(days) < day_share, dtype=np.bool_)
        if start_day < days:
            active[start_day] = True  # the attack starts on its start day
        factor = float(rng.uniform(0.0, 0.4))
        return AttackOutcome(
            intermittent(wh, start_day, active, factor), (), {"day_share": day_share, "factor": factor}
        )
    if attack is Attack.METER_REVERSAL:
        episodes = (
            _cover_episode(TamperCode.TERMINAL_COVER_OPENED, start_day, rng),
            TamperEpisode(start_day * SECONDS_PER_DAY, None, TamperCode.REVERSE_CURRENT),
        )
        return AttackOutcome(meter_reversal(wh, start_day), episodes, {})
    if attack is Attack.PHASE_BYPASS:
        bypassed = float(rng.uniform(0.4, 0.9))
        episodes = (
            _cover_episode(TamperCode.TERMINAL_COVER_OPENED, start_day, rng),
            TamperEpisode(start_day * SECONDS_PER_DAY, None, TamperCode.CURRENT_MISMATCH),
        )
        return AttackOutcome(h1_scaled(wh, start_day, 1 - bypassed), episodes, {"bypassed_share": bypassed})
    if attack is Attack.NEUTRAL_EARTH_RETURN:
        registered = float(rng.uniform(0.0, 0.3))
        episodes = (
            _cover_episode(TamperCode.TERMINAL_COVER_OPENED, start_day, rng),
            TamperEpisode(start_day * SECONDS_PER_DAY, None, TamperCode.NEUTRAL_MISSING),
        )
        return AttackOutcome(h1_scaled(wh, start_day, registered), episodes, {"registered_share": registered})
    if attack is Attack.MAGNET:
        registered = float(rng.uniform(0.1, 0.5))
        hour = np.arange(steps_per_day) * step_s / 3600
        on_h = rng.uniform(16.0, 19.0, (days, 1))
        magnet_on = (hour >= on_h) & (hour < on_h + rng.uniform(3.0, 6.0, (days, 1)))
        magnet_on[:start_day] = False
        magnet_episodes = _episodes_of_flags(magnet_on, step_s, TamperCode.MAGNETIC_FIELD)
        return AttackOutcome(
            scaled_while(wh, start_day, magnet_on, registered),
            magnet_episodes,
            {"registered_share": registered},
        )
    if attack is Attack.COVER_OPENING:
        registered = float(rng.uniform(0.3, 0.7))
        cover = _cover_episode(TamperCode.METER_COVER_OPENED, start_day, rng)
        return AttackOutcome(h1_scaled(wh, start_day, registered), (cover,), {"registered_share": registered})
    raise AssertionError(f"unhandled attack {attack!r}")  # pragma: no cover - the enum is exhausted above


def holiday(wh: FloatArray, start_day: int, n_days: int, factor: float) -> FloatArray:
    """Away on holiday: the days `[start_day, start_day + n_days)` drop to `factor` (fridge and standby)."""
    out = _checked(wh, start_day)
    out[start_day : start_day + n_days] *= factor
    return out


def new_appliance(wh: FloatArray, start_day: int, added_w: float) -> FloatArray:
    """A new appliance (freezer, aquarium, electric heater) adds a constant `added_w` W from `start_day` on."""
    out = _checked(wh, start_day)
    out[start_day:] += added_w * (SECONDS_PER_DAY / out.shape[1]) / 3600
    return out


def vacancy(wh: FloatArray, start_day: int, n_days: int, factor: float) -> FloatArray:
    """The home stands empty for `n_days` from `start_day`: consumption near zero (`factor` of a few %)."""
    return holiday(wh, start_day, n_days, factor)


def efficiency(wh: FloatArray, start_day: int, factor: float) -> FloatArray:
    """LED lamps, a heat pump, insulation: consumption falls to `factor` from `start_day` on, for good."""
    return h1_scaled(wh, start_day, factor)


def apply_honest_change(
    change: HonestChange, true_wh: FloatArray, start_day: int, rng: np.random.Generator
) -> tuple[FloatArray, dict[str, float]]:
    """The household's new true load after `change` (parameters from `rng`, ranges in the module docstring)."""
    change = HonestChange(change)
    if change is HonestChange.HOLIDAY:
        n_days, factor = int(rng.integers(7, 29)), float(rng.uniform(0.15, 0.35))
        return holiday(true_wh, start_day, n_days, factor), {"days": n_days, "factor": factor}
    if change is HonestChange.NEW_APPLIANCE:
        added_w = float(rng.uniform(80.0, 400.0))
        return new_appliance(true_wh, start_day, added_w), {"added_w": added_w}
    if change is HonestChange.VACANCY:
        n_days, factor = int(rng.integers(28, 85)), float(rng.uniform(0.0, 0.05))
        return vacancy(true_wh, start_day, n_days, factor), {"days": n_days, "factor": factor}
    if change is HonestChange.EFFICIENCY:
        factor = float(rng.uniform(0.6, 0.85))
        return efficiency(true_wh, start_day, factor), {"factor": factor}
    raise AssertionError(f"unhandled change {change!r}")  # pragma: no cover - the enum is exhausted above
