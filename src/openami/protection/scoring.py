"""Rank meters by how suspicious their consumption, energy balance and tamper events look, without labels (pure).

The score is a sum of contributions, each one a reason an inspector can read:
- every consumption feature becomes a robust z-score against the fleet, (x - median) / (1.4826 · MAD), in the
  suspicious direction only; a feature adds weight × (z - Z_FREE), capped at Z_CAP, so that ordinary scatter (|z|
  below about 2) adds nothing and one extreme feature cannot drown the others;
- energy-balance evidence (0..1: the meter's fall reappeared as transformer loss the same days) adds up to
  BALANCE_WEIGHT, and tamper events add EVENT_WEIGHT per doubling of their count plus their hours: both are
  weighted strongly since they are physical evidence and consumption alone is not (a household can go on holiday).
Higher is more suspicious; the number has no unit and compares meters of one run only.

The MAD floors keep a fleet of near-identical meters (synthetic data, a block of flats) from dividing by almost
zero: a feature must differ from the crowd by a meaningful amount, not by a rounding error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import numpy as np

from openami.protection.features import (
    CLEAR_FALL_Z,
    Array,
    IntArray,
    daily_totals_wh,
    energy_balance,
    event_totals,
    level_change,
    near_zero_share,
    shape_features,
    transformer_loss_wh,
    variation_rise,
)

Z_FREE = 2.0  # z-scores up to this much add nothing: ordinary scatter among honest customers
Z_CAP = 8.0  # one feature adds at most weight × Z_CAP
BALANCE_WEIGHT = 8.0  # all of a fall showing up as transformer loss, clearly above noise
EVENT_WEIGHT = 3.0  # per doubling of the number of tamper events
EVENT_HOUR_WEIGHT = 1.0  # per e-fold of (1 + hours under tamper)
REASONS_SHOWN = 3


@dataclass(frozen=True)
class MeterScore:
    meter_id: str
    score: float
    reasons: tuple[str, ...]  # the largest contributions first, in words


@dataclass(frozen=True)
class _Feature:
    name: str
    weight: float
    mad_floor: float
    higher_is_suspicious: bool


# name, weight, MAD floor (in the feature's unit), direction
_FEATURES = (
    _Feature("fall", 1.0, 0.05, True),
    _Feature("near_zero", 1.0, 0.02, True),
    _Feature("variation", 0.5, 0.15, True),
    _Feature("own_shape", 0.5, 0.03, True),
    _Feature("peer_shape", 0.5, 0.03, True),
    _Feature("intraday_cv", 1.0, 0.05, False),
)


def robust_z(values: Array, mad_floor: float) -> Array:
    """(x - median) / (1.4826 · max(MAD, mad_floor)) over the present values; NaN stays NaN."""
    present = values[~np.isnan(values)]
    if present.size == 0:
        return np.full_like(values, np.nan)
    median = float(np.median(present))
    mad = float(np.median(np.abs(present - median)))
    return (values - median) / (1.4826 * max(mad, mad_floor))


def score_meters(
    meter_ids: Sequence[str],
    energy_wh: Array,
    first_day: date,
    *,
    meter_transformer: IntArray | None = None,
    transformer_ids: Sequence[str] = (),
    transformer_daily_wh: Array | None = None,
    events: Sequence[tuple[str, datetime, datetime | None, str]] = (),
) -> list[MeterScore]:
    """Every meter's score and reasons, most suspicious first (ties by meter id).

    `energy_wh` is meters × days × slots (NaN: missing; one slot for daily data) with day 0 = `first_day` (UTC);
    `meter_transformer[i]` indexes `transformer_ids` (-1: unknown), `transformer_daily_wh` is transformers × the
    same days; events are (meter_id, start, end or None, code) for meters in `meter_ids`.
    """
    meters, days, _ = energy_wh.shape
    tx = meter_transformer if meter_transformer is not None else np.full(meters, -1, dtype=np.int64)
    daily = daily_totals_wh(energy_wh)
    change = level_change(daily)
    shapes = shape_features(energy_wh, daily, change.day, tx)
    values = {
        "fall": np.where(change.welch_z >= CLEAR_FALL_Z, change.fall, 0.0),
        "near_zero": near_zero_share(daily),
        "variation": variation_rise(daily, change.day),
        "own_shape": shapes.own_change,
        "peer_shape": shapes.peer_difference,
        "intraday_cv": shapes.intraday_cv,
    }
    contributions: dict[str, Array] = {}
    for feature in _FEATURES:
        z = robust_z(values[feature.name], feature.mad_floor)
        z = z if feature.higher_is_suspicious else -z
        contributions[feature.name] = feature.weight * np.clip(np.nan_to_num(z) - Z_FREE, 0.0, Z_CAP)

    if transformer_daily_wh is not None and len(transformer_ids):
        loss = transformer_loss_wh(daily, transformer_daily_wh, tx)
    else:
        loss = np.zeros((0, days))
    balance = energy_balance(daily, loss, tx, change)
    contributions["balance"] = BALANCE_WEIGHT * balance.evidence

    until = datetime.combine(first_day + timedelta(days=days), time(), tzinfo=UTC)
    tamper = event_totals(meter_ids, events, until)
    contributions["events"] = EVENT_WEIGHT * np.log2(
        1 + tamper.count.sum(axis=1)
    ) + EVENT_HOUR_WEIGHT * np.log1p(tamper.hours.sum(axis=1))

    def day_text(index: int) -> str:
        return (first_day + timedelta(days=index)).isoformat()

    words: dict[str, Callable[[int], str]] = {
        "fall": lambda i: (
            f"consumption fell {change.fall[i] * 100:.0f} % from {day_text(int(change.day[i]))} "
            f"({change.before_wh[i] / 1000:.1f} to {change.after_wh[i] / 1000:.1f} kWh/day)"
        ),
        "balance": lambda i: (
            f"transformer {transformer_ids[tx[i]]} loss rose {balance.loss_rise_wh[i] / 1000:.1f} kWh/day the same "
            f"day; this meter's fall explains {balance.share_of_loss_rise[i] * 100:.0f} % of it"
        ),
        "near_zero": lambda i: f"near zero on {values['near_zero'][i] * 100:.0f} % of days",
        "variation": lambda i: f"day-to-day variation {2 ** values['variation'][i]:.1f}× its earlier level",
        "own_shape": lambda i: (
            f"daily shape changed (correlation {1 - values['own_shape'][i]:.2f} with its own earlier shape)"
        ),
        "peer_shape": lambda i: (
            f"daily shape unlike its peers' (correlation {1 - values['peer_shape'][i]:.2f})"
        ),
        "intraday_cv": lambda i: (
            f"flat intraday profile (intervals vary {values['intraday_cv'][i] * 100:.0f} % around the day's mean)"
        ),
        "events": lambda i: _events_text(tamper.codes, tamper.count[i], tamper.hours[i]),
    }
    names = list(contributions)
    table = np.stack([contributions[name] for name in names], axis=1)
    totals = table.sum(axis=1)
    results = []
    for i, meter in enumerate(meter_ids):
        ranked = [j for j in np.argsort(-table[i], kind="stable") if table[i, j] > 0][:REASONS_SHOWN]
        reasons = tuple(words[names[j]](i) for j in ranked) or ("nothing stands out",)
        results.append(MeterScore(meter, round(float(totals[i]), 3), reasons))
    results.sort(key=lambda result: (-result.score, result.meter_id))
    return results


def _events_text(codes: Sequence[str], count: IntArray, hours: Array) -> str:
    total = int(count.sum())
    parts = [
        f"{int(count[j])}× {codes[j]} ({hours[j]:.1f} h)"
        for j in np.argsort(-count, kind="stable")
        if count[j]
    ]
    return f"{total} tamper event{'s' if total > 1 else ''}: " + ", ".join(parts)
