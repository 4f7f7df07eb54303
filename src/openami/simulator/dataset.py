"""Labelled revenue-protection data sets: customers' readings with thieves and honest changes among them, the
check meters of their transformers, tamper events, and the truth kept apart, for the theft scorer and its bench.

`generate` is deterministic per seed and does no I/O; `write_csv` writes the file formats of `openami theft score`
(docs/theft-data.md). Each customer's true load comes from `households.Household` (daily shapes by habit,
weekday/weekend, season and weather, appliance runs, its own holidays), computed at a base step (15 or 30 min, or
hourly for daily data) so that attacks on the intraday readings act as they would in a meter, then summed to the
resolution asked for. Days are UTC days; the site lies on the Greenwich meridian so local time is UTC.

Energy is integer Wh. Interval energies are rounded as a meter does it, on the cumulative register: each interval
is the difference of two rounded register values, so totals over any span are exact to 1 Wh and an attack that
keeps a day's total (h5, h6) keeps it to the Wh.

The transformer check meter measures the true energy of its customers plus technical losses, with measurement
noise: losses_w = no-load (0.25 % of the rating, iron losses) + load losses (3 % of the rating at rated load,
transformer copper and low-voltage lines) × (load / rating)², computed per base step; the noise is a share of the
flow drawn from N(0, 0.5 %) and clipped at ±3σ, so the flow never strays more than 1.5 % from true + losses.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt

from openami.simulator.grid import transformer_rating_kva
from openami.simulator.households import Climate, Household
from openami.simulator.theft import (
    PHYSICAL_ATTACKS,
    SECONDS_PER_DAY,
    Attack,
    HonestChange,
    TamperCode,
    apply_attack,
    apply_honest_change,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

RESOLUTIONS_MIN = (15, 30, 1440)
NO_LOAD_LOSS_SHARE = 0.0025  # iron losses, share of the rating, at any load
RATED_LOAD_LOSS_SHARE = 0.03  # copper and line losses at rated load, share of the rating
CHECK_METER_NOISE_SIGMA = 0.005  # share of the flow; clipped at 3σ
CHECK_METER_NOISE_CLIP_SIGMAS = 3.0
TRANSFORMER_POWER_FACTOR = 0.95
NO_CHANGE = "none"
_BASE_STEP_S = {15: 900, 30: 1800, 1440: 3600}
_ATTACK_KINDS = frozenset(a.value for a in Attack)
_HONEST_KINDS = frozenset(c.value for c in HonestChange)
_CHUNK_DAYS = (
    7  # households are computed a week at a time: one call per day is slower, a year at once too big
)


@dataclass(frozen=True, slots=True)
class EventRow:
    """One row of the events file; `end` is None while the condition still holds at the end of the data."""

    meter_id: str
    start: datetime
    end: datetime | None
    code: str


@dataclass(frozen=True, slots=True)
class TheftDataset:
    """Everything `generate` made. Arrays are indexed [meter, interval] or [transformer, interval]; intervals
    are `[start + k·resolution, start + (k+1)·resolution)` in UTC."""

    start: datetime
    resolution_min: int
    meter_ids: tuple[str, ...]
    transformer_ids: tuple[str, ...]
    transformer_of: IntArray  # per meter: index into transformer_ids
    true_wh: IntArray  # what each customer really drew
    reported_wh: IntArray  # what each meter reports; negative while a reversed meter registers export
    present: BoolArray  # False where the readings file leaves the row out (a missing reading)
    transformer_wh: IntArray  # what each check meter measured
    technical_loss_wh: FloatArray  # the losses inside transformer_wh (before noise)
    transformer_rating_w: FloatArray  # per transformer
    labels: npt.NDArray[np.int8]  # per meter: 1 theft, 0 honest
    kinds: tuple[str, ...]  # per meter: an Attack value, a HonestChange value, or "none"
    start_days: IntArray  # per meter: the day its attack or change starts, -1 for "none"
    events: tuple[EventRow, ...]

    @property
    def n_intervals(self) -> int:
        return int(self.true_wh.shape[1])

    def interval_starts(self) -> list[datetime]:
        """The UTC start of each interval."""
        step = timedelta(minutes=self.resolution_min)
        return [self.start + k * step for k in range(self.n_intervals)]


@dataclass(frozen=True, slots=True)
class CsvFiles:
    """Where `write_csv` put each file; the labels are in their own folder so no scorer reads them by mistake."""

    readings: Path
    transformers: Path
    mapping: Path
    events: Path
    labels: Path


def technical_losses_w(load_w: FloatArray, rating_w: float | FloatArray) -> FloatArray:
    """Technical losses W of a transformer and its low-voltage lines carrying `load_w`: a fixed no-load part
    plus a part growing with the square of the load (module docstring)."""
    rating = np.asarray(rating_w, dtype=np.float64)
    if np.any(rating <= 0):
        raise ValueError(f"transformer rating must be positive W, got {rating_w}")
    load = np.asarray(load_w, dtype=np.float64)
    return np.asarray(
        NO_LOAD_LOSS_SHARE * rating + RATED_LOAD_LOSS_SHARE * rating * (load / rating) ** 2, dtype=np.float64
    )


def register_rounded(energy_wh: FloatArray) -> IntArray:
    """Interval energies rounded to integer Wh along the last axis as a cumulative register does it, so that
    sums over any span of intervals stay within 1 Wh of the exact sums."""
    register = np.rint(np.cumsum(np.asarray(energy_wh, dtype=np.float64), axis=-1)).astype(np.int64)
    return np.diff(register, axis=-1, prepend=0)


def _summed(values: npt.NDArray[np.generic], group: int) -> npt.NDArray[np.generic]:
    """Sum consecutive groups of `group` intervals along the last axis (base steps into output intervals)."""
    if group == 1:
        return values
    return values.reshape(*values.shape[:-1], -1, group).sum(axis=-1)  # type: ignore[no-any-return]


def generate(
    seed: int,
    customers: int,
    days: int,
    resolution_min: int,
    theft_share: float,
    *,
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC),
    attacks: Sequence[Attack] = tuple(Attack),
    honest_change_share: float = 0.2,
    customers_per_transformer: tuple[int, int] = (10, 40),
    tamper_event_share: float = 0.8,
    false_event_share: float = 0.02,
    missing_share: float = 0.002,
) -> TheftDataset:
    """A labelled data set of `customers` over `days` UTC days from `start` (a UTC midnight).

    `theft_share` of the customers are thieves, the attack kinds dealt out evenly from `attacks`;
    `honest_change_share` of the honest ones change their behaviour (the four `HonestChange`s, evenly). Each
    attack or change starts on a day drawn from the middle half of the series, so there is a before and an
    after. Of the thieves with a physical attack, `tamper_event_share` have meters whose sensors record it;
    `false_event_share` of the honest meters record one harmless short event (an inspection opening the cover,
    a magnet-like field from a nearby appliance). `missing_share` of the readings rows are left out.
    """
    if resolution_min not in RESOLUTIONS_MIN:
        raise ValueError(f"resolution_min must be one of {RESOLUTIONS_MIN}, got {resolution_min}")
    if customers < 1 or days < 8:
        raise ValueError(f"need at least 1 customer and 8 days, got customers={customers}, days={days}")
    for name, share in (
        ("theft_share", theft_share),
        ("honest_change_share", honest_change_share),
        ("tamper_event_share", tamper_event_share),
        ("false_event_share", false_event_share),
        ("missing_share", missing_share),
    ):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be within 0..1, got {share}")
    if start.tzinfo is None or start.utcoffset() != timedelta(0) or start.timestamp() % SECONDS_PER_DAY:
        raise ValueError(f"start must be a UTC midnight, got {start.isoformat()}")
    low, high = customers_per_transformer
    if not 1 <= low <= high:
        raise ValueError(
            f"customers_per_transformer must be (low, high) with 1 <= low <= high, got {low, high}"
        )
    if not attacks:
        raise ValueError("attacks must name at least one Attack")

    rng = np.random.default_rng([seed, 6])
    base_step_s = _BASE_STEP_S[resolution_min]
    steps_per_day = SECONDS_PER_DAY // base_step_s
    group = resolution_min * 60 // base_step_s

    # Who does what, dealt out evenly so every kind is represented.
    n_thieves = round(theft_share * customers)
    order = rng.permutation(customers)
    thieves, honest = order[:n_thieves], order[n_thieves:]
    n_changers = round(honest_change_share * honest.size)
    kinds = [NO_CHANGE] * customers
    for k, meter in enumerate(thieves):
        kinds[meter] = Attack(attacks[k % len(attacks)]).value
    changes = list(HonestChange)
    for k, meter in enumerate(honest[:n_changers]):
        kinds[meter] = changes[k % len(changes)].value
    start_days = np.where(
        np.array(kinds) == NO_CHANGE, -1, rng.integers(days // 4, 3 * days // 4 + 1, customers)
    ).astype(np.int64)

    climate = Climate(51.5, 0.0, weather_seed=seed)
    seeds = rng.choice(2**31, size=customers, replace=False)
    true_base = np.empty((customers, days * steps_per_day), dtype=np.int64)
    reported_base = np.empty_like(true_base)
    episodes_of: dict[int, tuple[tuple[int, int | None, TamperCode], ...]] = {}
    t0 = start.timestamp()
    for meter in range(customers):
        household = Household.draw(int(seeds[meter]), climate, solar_share=0.0)
        power_w = np.concatenate(
            [
                household.mean_power_w(
                    t0 + d * SECONDS_PER_DAY, min(_CHUNK_DAYS, days - d) * steps_per_day, base_step_s
                )[0]
                for d in range(0, days, _CHUNK_DAYS)
            ]
        )
        wh = (power_w * base_step_s / 3600).reshape(days, steps_per_day)
        meter_rng = np.random.default_rng([seed, 6, meter])
        kind, first_day = kinds[meter], int(start_days[meter])
        if kind in _HONEST_KINDS:
            wh, _ = apply_honest_change(HonestChange(kind), wh, first_day, meter_rng)
        true_base[meter] = register_rounded(wh.ravel())
        if kind in _ATTACK_KINDS:
            outcome = apply_attack(
                Attack(kind), true_base[meter].reshape(days, steps_per_day), first_day, meter_rng
            )
            reported_base[meter] = register_rounded(outcome.reported_wh.ravel())
            if Attack(kind) in PHYSICAL_ATTACKS and meter_rng.random() < tamper_event_share:
                episodes_of[meter] = tuple((e.start_s, e.end_s, e.code) for e in outcome.episodes)
        else:
            reported_base[meter] = true_base[meter]
            if meter_rng.random() < false_event_share:
                at_s = int(meter_rng.integers(0, days * SECONDS_PER_DAY - 3600))
                code = (
                    TamperCode.METER_COVER_OPENED if meter_rng.random() < 0.5 else TamperCode.MAGNETIC_FIELD
                )
                episodes_of[meter] = ((at_s, at_s + int(meter_rng.integers(60, 1800)), code),)

    # Transformers: consecutive runs of a shuffled order, so thieves fall anywhere.
    placement = rng.permutation(customers)
    transformer_of = np.empty(customers, dtype=np.int64)
    sizes: list[int] = []
    while sum(sizes) < customers:
        sizes.append(min(int(rng.integers(low, high + 1)), customers - sum(sizes)))
    first = 0
    for t, size in enumerate(sizes):
        transformer_of[placement[first : first + size]] = t
        first += size
    rating_w = np.array(
        [transformer_rating_kva(size) * 1000 * TRANSFORMER_POWER_FACTOR for size in sizes], dtype=np.float64
    )
    customers_wh = np.zeros((len(sizes), true_base.shape[1]), dtype=np.int64)
    np.add.at(customers_wh, transformer_of, true_base)
    loss_wh = technical_losses_w(customers_wh * 3600 / base_step_s, rating_w[:, None]) * base_step_s / 3600
    clip = CHECK_METER_NOISE_CLIP_SIGMAS * CHECK_METER_NOISE_SIGMA
    noise_share = rng.normal(0.0, CHECK_METER_NOISE_SIGMA, customers_wh.shape).clip(-clip, clip)
    transformer_base = customers_wh + register_rounded(loss_wh + noise_share * (customers_wh + loss_wh))

    n_intervals = days * steps_per_day // group
    events = tuple(
        EventRow(
            f"MTR{meter:06d}",
            start + timedelta(seconds=start_s),
            None if end_s is None else start + timedelta(seconds=end_s),
            code.value,
        )
        for meter in sorted(episodes_of)
        for start_s, end_s, code in episodes_of[meter]
    )
    return TheftDataset(
        start=start,
        resolution_min=resolution_min,
        meter_ids=tuple(f"MTR{meter:06d}" for meter in range(customers)),
        transformer_ids=tuple(f"TX{t:04d}" for t in range(len(sizes))),
        transformer_of=transformer_of,
        true_wh=np.asarray(_summed(true_base, group), dtype=np.int64),
        reported_wh=np.asarray(_summed(reported_base, group), dtype=np.int64),
        present=rng.random((customers, n_intervals)) >= missing_share,
        transformer_wh=np.asarray(_summed(transformer_base, group), dtype=np.int64),
        technical_loss_wh=np.asarray(_summed(loss_wh, group), dtype=np.float64),
        transformer_rating_w=rating_w,
        labels=np.array([kind in _ATTACK_KINDS for kind in kinds], dtype=np.int8),
        kinds=tuple(kinds),
        start_days=start_days,
        events=events,
    )


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def write_csv(directory: Path, dataset: TheftDataset) -> CsvFiles:
    """Write the data set as the scorer's input files in `directory` and the labels in `directory/truth/`.

    readings.csv `meter_id,timestamp,energy_wh` (the import register's energy in each interval, so a reversed
    meter reports 0; rows with `present` False left out), transformers.csv `transformer_id,timestamp,energy_wh`,
    mapping.csv `meter_id,transformer_id`, events.csv `meter_id,start,end,code` (`end` empty while the condition
    still holds) and truth/labels.csv `meter_id,label,attack`. Timestamps are interval starts, ISO 8601 in UTC.
    """
    directory = Path(directory)
    truth = directory / "truth"
    truth.mkdir(parents=True, exist_ok=True)
    files = CsvFiles(
        readings=directory / "readings.csv",
        transformers=directory / "transformers.csv",
        mapping=directory / "mapping.csv",
        events=directory / "events.csv",
        labels=truth / "labels.csv",
    )
    stamps = [_utc_text(moment) for moment in dataset.interval_starts()]
    imported = np.maximum(dataset.reported_wh, 0).tolist()
    present = dataset.present.tolist()
    with files.readings.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("meter_id", "timestamp", "energy_wh"))
        for meter_id, values, kept in zip(dataset.meter_ids, imported, present, strict=True):
            writer.writerows(
                (meter_id, stamp, value) for stamp, value, ok in zip(stamps, values, kept, strict=True) if ok
            )
    with files.transformers.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("transformer_id", "timestamp", "energy_wh"))
        for transformer_id, values in zip(
            dataset.transformer_ids, dataset.transformer_wh.tolist(), strict=True
        ):
            writer.writerows(
                (transformer_id, stamp, value) for stamp, value in zip(stamps, values, strict=True)
            )
    with files.mapping.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("meter_id", "transformer_id"))
        writer.writerows(
            (meter_id, dataset.transformer_ids[t])
            for meter_id, t in zip(dataset.meter_ids, dataset.transformer_of.tolist(), strict=True)
        )
    with files.events.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("meter_id", "start", "end", "code"))
        writer.writerows(
            (e.meter_id, _utc_text(e.start), "" if e.end is None else _utc_text(e.end), e.code)
            for e in dataset.events
        )
    with files.labels.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("meter_id", "label", "attack"))
        writer.writerows(
            zip(dataset.meter_ids, dataset.labels.tolist(), dataset.kinds, strict=True),
        )
    return files
