"""Per-meter evidence of theft from consumption arrays, the transformer energy balance and tamper events (pure).

Inputs are a meters × days × slots array of interval energy in Wh (NaN where no reading; one slot per day for daily
data), transformer daily energy and the meter → transformer index. Every function is vectorised over meters so that
a fleet of 100,000 is one pass; no I/O, no clock.

What each feature looks for (Jokar et al. 2016 name the attacks h1 to h6):
- a fall in level at the best single change point (h1, h3, h4, bypass from some day on);
- the share of near-zero days (h2 on/off theft, full bypass, a meter that stopped recording);
- day-to-day variation rising against its own earlier level (intermittent theft);
- the daily shape no longer like its own past, or unlike its transformer peers' (h6 reversal, load shifting);
- a flat intraday profile (h5 reports each day's mean in every interval);
- the transformer's loss rising on the day the meter's consumption fell, by about the energy it lost: the
  energy-balance evidence that separates theft from an honest household that simply uses less;
- tamper events by code: counts and hours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# A change point needs this many days on each side, or a week's rhythm would pass for a change of level.
MIN_SEGMENT_DAYS = 7
# A day's total is estimated from its intervals when at least this share is present (scaled up); else missing.
DAY_COVERAGE = 0.75
# A day is "near zero" below this share of the meter's own 90th-percentile day.
NEAR_ZERO_SHARE = 0.05
# A transformer day's loss is computed when readings cover at least this share of its meters.
BALANCE_COVERAGE = 0.8
# A fall at the change point counts from this many standard errors (Welch's t) on: below it, day-to-day noise.
CLEAR_FALL_Z = 3.0
# Peers are the meter's transformer when it has at least this many meters, else the whole fleet.
MIN_PEERS = 3


def daily_totals_wh(energy_wh: Array) -> Array:
    """Meters × days totals in Wh; days with fewer than DAY_COVERAGE of their intervals are NaN (missing)."""
    slots = energy_wh.shape[2]
    present = np.count_nonzero(~np.isnan(energy_wh), axis=2)
    total = np.nansum(energy_wh, axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = total * slots / present
    return np.where(present >= DAY_COVERAGE * slots, scaled, np.nan)


@dataclass(frozen=True)
class LevelChange:
    """The largest fall in mean daily consumption at one change point, per meter."""

    day: IntArray  # first day after the change (index into the grid); -1 when no split is possible
    before_wh: Array  # mean daily energy before the change
    after_wh: Array  # mean daily energy from the change on
    fall: Array  # (before - after) / before, 0 when no change point; negative for a rise
    welch_z: Array  # Welch's t statistic of the fall: how far it stands above day-to-day noise


def level_change(daily_wh: Array) -> LevelChange:
    """The split of each meter's days into before and after that maximises the fall n1·n2/n · (m1 - m2)."""
    meters, days = daily_wh.shape
    none = LevelChange(np.full(meters, -1, dtype=np.int64), *(np.zeros(meters) for _ in range(4)))
    if days < 2 * MIN_SEGMENT_DAYS:
        return none
    present = ~np.isnan(daily_wh)
    value = np.where(present, daily_wh, 0.0)
    count = np.cumsum(present, axis=1, dtype=np.float64)
    total = np.cumsum(value, axis=1)
    square = np.cumsum(value * value, axis=1)
    # Splits k = MIN..days-MIN: "before" is days [0, k), "after" is [k, days).
    cut = slice(MIN_SEGMENT_DAYS - 1, days - MIN_SEGMENT_DAYS)
    n1, s1, q1 = count[:, cut], total[:, cut], square[:, cut]
    n2, s2, q2 = count[:, -1:] - n1, total[:, -1:] - s1, square[:, -1:] - q1
    with np.errstate(invalid="ignore", divide="ignore"):
        m1, m2 = s1 / n1, s2 / n2
        gain = np.where((n1 >= 2) & (n2 >= 2), n1 * n2 / (n1 + n2) * (m1 - m2) * np.abs(m1 - m2), -np.inf)
    best = np.argmax(gain, axis=1)
    rows = np.arange(meters)
    valid = np.isfinite(gain[rows, best])
    b1, b2 = m1[rows, best], m2[rows, best]
    c1, c2 = n1[rows, best], n2[rows, best]
    v1 = np.maximum(q1[rows, best] / np.maximum(c1, 1) - b1 * b1, 0.0) * c1 / np.maximum(c1 - 1, 1)
    v2 = np.maximum(q2[rows, best] / np.maximum(c2, 1) - b2 * b2, 0.0) * c2 / np.maximum(c2 - 1, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        fall = np.where(b1 > 0, (b1 - b2) / b1, 0.0)
        # The noise floor of 1 Wh/day keeps a perfectly steady synthetic meter from an infinite statistic.
        welch = (b1 - b2) / np.sqrt(v1 / c1 + v2 / c2 + 1.0)
    return LevelChange(
        day=np.where(valid, best + MIN_SEGMENT_DAYS, -1).astype(np.int64),
        before_wh=np.where(valid, b1, 0.0),
        after_wh=np.where(valid, b2, 0.0),
        fall=np.where(valid, fall, 0.0),
        welch_z=np.where(valid, welch, 0.0),
    )


def near_zero_share(daily_wh: Array) -> Array:
    """Share of each meter's present days below NEAR_ZERO_SHARE of its own 90th-percentile day (1 if all zero)."""
    present = ~np.isnan(daily_wh)
    days = np.maximum(present.sum(axis=1), 1)
    reference = _nanpercentile_rows(daily_wh, 90.0)
    near = present & (np.nan_to_num(daily_wh, nan=np.inf) <= NEAR_ZERO_SHARE * reference[:, None])
    return np.asarray(near.sum(axis=1) / days, dtype=np.float64)


def variation_rise(daily_wh: Array, change_day: IntArray) -> Array:
    """log2 of the coefficient of variation of daily totals after the change point over before it (the halves of
    the period when there is none); positive when the meter became more erratic."""
    days = daily_wh.shape[1]
    split = np.where(change_day >= 0, change_day, days // 2)
    after = np.arange(days)[None, :] >= split[:, None]
    cv_before = _masked_cv(daily_wh, ~after)
    cv_after = _masked_cv(daily_wh, after)
    # A floor of 0.02 keeps steady synthetic loads from a ratio of two near-zero numbers.
    return np.asarray(np.log2(np.maximum(cv_after, 0.02) / np.maximum(cv_before, 0.02)), dtype=np.float64)


def _masked_cv(daily_wh: Array, mask: npt.NDArray[np.bool_]) -> Array:
    values = np.where(mask & ~np.isnan(daily_wh), daily_wh, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = _nanmean(values, axis=1)
        std = np.sqrt(_nanmean((values - mean[:, None]) ** 2, axis=1))
        cv = std / mean
    return np.where(np.isfinite(cv), cv, 0.0)


@dataclass(frozen=True)
class ShapeFeatures:
    """Intraday shape evidence (NaN for daily data, where there is no shape)."""

    own_change: Array  # 1 - correlation of the mean daily shape after the change point with the one before
    peer_difference: Array  # 1 - correlation of the recent mean shape with the peers' mean shape
    intraday_cv: Array  # median over days of std/mean of the day's intervals: 0 for a perfectly flat profile


def shape_features(
    energy_wh: Array, daily_wh: Array, change_day: IntArray, transformer: IntArray
) -> ShapeFeatures:
    """The shape features; `transformer[i]` indexes meter i's transformer (-1: none, compared with the fleet)."""
    meters, days, slots = energy_wh.shape
    if slots == 1:
        nan = np.full(meters, np.nan)
        return ShapeFeatures(nan, nan, nan.copy())
    usable = ~np.isnan(daily_wh) & (daily_wh > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        shape = energy_wh / daily_wh[:, :, None]
    shape = np.where(usable[:, :, None], shape, np.nan)
    split = np.where(change_day >= 0, change_day, days // 2)
    after = np.arange(days)[None, :] >= split[:, None]
    shape_before = _nanmean(np.where(after[:, :, None], np.nan, shape), axis=1)
    shape_after = _nanmean(np.where(after[:, :, None], shape, np.nan), axis=1)
    own = 1.0 - _row_correlation(shape_before, shape_after)

    recent = np.nan_to_num(shape_after)
    group = np.where(transformer >= 0, transformer, -1)
    keys, inverse = np.unique(group, return_inverse=True)
    sums = np.zeros((keys.size, slots))
    np.add.at(sums, inverse, recent)
    sizes = np.bincount(inverse, minlength=keys.size).astype(np.float64)
    fleet = recent.sum(axis=0)
    own_group_size = sizes[inverse]
    use_group = (keys[inverse] >= 0) & (own_group_size >= MIN_PEERS)
    peers = np.where(use_group[:, None], sums[inverse] - recent, fleet[None, :] - recent)
    peer = 1.0 - _row_correlation(recent, peers)

    with np.errstate(invalid="ignore", divide="ignore"):
        day_mean = _nanmean(energy_wh, axis=2)
        day_std = np.sqrt(_nanmean((energy_wh - day_mean[:, :, None]) ** 2, axis=2))
        day_cv = np.where(usable & (day_mean > 0), day_std / day_mean, np.nan)
    intraday_cv = _nanmedian_rows(day_cv)
    return ShapeFeatures(own, peer, intraday_cv)


@dataclass(frozen=True)
class BalanceEvidence:
    """Energy balance at the meter's transformer around the meter's own change point (NaN/0 without one)."""

    loss_rise_wh: Array  # mean daily transformer loss after the meter's change point minus before
    explained_wh: Array  # the part of the meter's daily fall that reappeared as transformer loss
    match: Array  # explained / the meter's daily fall (0..1): 1 when all of the fall became loss
    share_of_loss_rise: (
        Array  # explained / the loss rise (0..1): the meter's share of the new unexplained loss
    )
    significance: Array  # 0..1: how far the loss rise and the meter's fall stand above day-to-day noise
    evidence: Array  # match × significance: the score's energy-balance term


def transformer_loss_wh(daily_wh: Array, transformer_daily_wh: Array, transformer: IntArray) -> Array:
    """Transformers × days: check-meter energy minus the sum of its meters (NaN when too few meters reported).

    A meter's missing day counts as its median day in the sum, so one gap does not read as a loss; below
    BALANCE_COVERAGE of the meters present, the day is not judged at all.
    """
    count, days = transformer_daily_wh.shape
    mapped = transformer >= 0
    typical = _nanmedian_rows(daily_wh)
    filled = np.where(np.isnan(daily_wh), np.nan_to_num(typical)[:, None], daily_wh)
    metered = np.zeros((count, days))
    reporting = np.zeros((count, days))
    np.add.at(metered, transformer[mapped], filled[mapped])
    np.add.at(reporting, transformer[mapped], (~np.isnan(daily_wh[mapped])).astype(np.float64))
    members = np.bincount(transformer[mapped], minlength=count).astype(np.float64)
    covered = reporting >= BALANCE_COVERAGE * np.maximum(members, 1)[:, None]
    return np.where(covered & (members[:, None] > 0), transformer_daily_wh - metered, np.nan)


def energy_balance(
    daily_wh: Array, loss_wh: Array, transformer: IntArray, change: LevelChange
) -> BalanceEvidence:
    """How much of each meter's fall at its change point reappeared as loss at its transformer the same days."""
    meters, days = daily_wh.shape
    zeros = np.zeros(meters)
    usable = (transformer >= 0) & (change.day >= 0) & (loss_wh.shape[0] > 0)
    if not usable.any():
        return BalanceEvidence(np.full(meters, np.nan), zeros, zeros, zeros, zeros, zeros)
    loss = np.where(usable[:, None], loss_wh[np.maximum(transformer, 0)], np.nan)
    after = np.arange(days)[None, :] >= change.day[:, None]
    before_loss = np.where(after, np.nan, loss)
    after_loss = np.where(after, loss, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_before, mean_after = _nanmean(before_loss, axis=1), _nanmean(after_loss, axis=1)
        n1 = np.count_nonzero(~np.isnan(before_loss), axis=1)
        n2 = np.count_nonzero(~np.isnan(after_loss), axis=1)
        var1 = _nanmean((before_loss - mean_before[:, None]) ** 2, axis=1)
        var2 = _nanmean((after_loss - mean_after[:, None]) ** 2, axis=1)
        rise = mean_after - mean_before
        # 1 Wh/day of floor: a noiseless synthetic balance would otherwise divide by zero.
        z = rise / np.sqrt(var1 / np.maximum(n1, 1) + var2 / np.maximum(n2, 1) + 1.0)
    judged = usable & (n1 >= 2) & (n2 >= 2) & np.isfinite(rise)
    fall_wh = change.before_wh - change.after_wh
    explained = np.where(judged, np.clip(np.minimum(rise, fall_wh), 0.0, None), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        match = np.where(judged & (fall_wh > 0), explained / fall_wh, 0.0)
        share = np.where(judged & (rise > 0), explained / rise, 0.0)
    # Both the loss rise and the meter's own fall must stand clear of noise: any meter's best split finds some
    # small fall, and under a transformer with a thief that noise would otherwise line up with the thief's loss.
    fall_clear = np.clip((change.welch_z - CLEAR_FALL_Z) / 2.0, 0.0, 1.0)
    significance = np.where(judged, np.clip((z - 1.0) / 2.0, 0.0, 1.0) * fall_clear, 0.0)
    return BalanceEvidence(
        loss_rise_wh=np.where(judged, rise, np.nan),
        explained_wh=explained,
        match=np.clip(match, 0.0, 1.0),
        share_of_loss_rise=np.clip(share, 0.0, 1.0),
        significance=significance,
        evidence=np.clip(match, 0.0, 1.0) * significance,
    )


@dataclass(frozen=True)
class EventTotals:
    codes: tuple[str, ...]
    count: IntArray  # meters × codes
    hours: Array  # meters × codes; an open event lasts until `until`


def event_totals(
    meter_ids: Sequence[str], events: Sequence[tuple[str, datetime, datetime | None, str]], until: datetime
) -> EventTotals:
    """Tamper events (meter_id, start, end or None, code) counted and timed per meter and code."""
    codes = tuple(sorted({event[3] for event in events}))
    row = {meter: i for i, meter in enumerate(meter_ids)}
    column = {code: j for j, code in enumerate(codes)}
    count = np.zeros((len(meter_ids), len(codes)), dtype=np.int64)
    hours = np.zeros((len(meter_ids), len(codes)))
    for meter, start, end, code in events:
        i, j = row[meter], column[code]
        count[i, j] += 1
        hours[i, j] += max(((end or until) - start).total_seconds(), 0.0) / 3600
    return EventTotals(codes, count, hours)


def _row_correlation(a: Array, b: Array) -> Array:
    """Pearson correlation of matching rows; 0 where a row is constant or missing (nothing to compare)."""
    a = a - _nanmean(a, axis=1)[:, None]
    b = b - _nanmean(b, axis=1)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.nansum(a * b, axis=1) / np.sqrt(np.nansum(a * a, axis=1) * np.nansum(b * b, axis=1))
    return np.where(np.isfinite(r), r, 0.0)


def _nanmean(values: Array, axis: int) -> Array:
    """np.nanmean without its warning for all-NaN slices (they give NaN, as expected)."""
    present = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(
            np.where(present, values, 0.0).sum(axis=axis) / present.sum(axis=axis), dtype=np.float64
        )


def _nanmedian_rows(values: Array) -> Array:
    return _nanpercentile_rows(values, 50.0)


def _nanpercentile_rows(values: Array, q: float) -> Array:
    """Per-row percentile ignoring NaN; NaN for an all-NaN row (without numpy's warning)."""
    empty: npt.NDArray[np.bool_] = np.asarray(np.isnan(values).all(axis=1))
    filled = np.where(empty[:, None], 0.0, values)
    result = np.nanpercentile(filled, q, axis=1)
    return np.where(empty, np.nan, result)
