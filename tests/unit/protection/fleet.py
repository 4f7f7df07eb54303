"""Small hand-made fleets for the theft scorer's tests: honest households with a daily rhythm, two transformers
whose check meters see the true consumption plus technical losses, and helpers that write them as the CLI's CSVs."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

FIRST_DAY = date(2026, 3, 1)


@dataclass
class Fleet:
    meter_ids: list[str]
    transformer_of: list[int]  # index into transformer_ids
    transformer_ids: list[str]
    true_wh: np.ndarray  # meters × days × slots: what the households used
    metered_wh: np.ndarray  # what the meters report (a thief's is less)

    def transformer_daily_wh(self, seed: int = 7, loss_share: float = 0.04) -> np.ndarray:
        """Check-meter daily energy: the true total plus technical losses and a little metering noise."""
        rng = np.random.default_rng(seed)
        daily = self.true_wh.sum(axis=2)
        out = np.zeros((len(self.transformer_ids), daily.shape[1]))
        for i, tx in enumerate(self.transformer_of):
            out[tx] += daily[i]
        return out * (1 + loss_share) * rng.normal(1.0, 0.003, out.shape)

    def index(self, meter: str) -> int:
        return self.meter_ids.index(meter)


def honest_fleet(meters: int = 12, days: int = 40, slots: int = 48, seed: int = 1) -> Fleet:
    """`meters` households over two transformers, each with morning and evening peaks, noisy day to day."""
    rng = np.random.default_rng(seed)
    hours = (np.arange(slots) + 0.5) * 24 / slots
    true = np.zeros((meters, days, slots))
    for i in range(meters):
        morning, evening = rng.uniform(6, 8.5), rng.uniform(18, 21)
        shape = (
            0.3
            + 1.0 * np.exp(-0.5 * ((hours - morning) / 1.2) ** 2)
            + 1.6 * np.exp(-0.5 * ((hours - evening) / 1.8) ** 2)
        )
        shape /= shape.sum()
        level_wh = rng.uniform(4000, 10000)
        day_factor = rng.lognormal(0.0, 0.15, days)
        noise = rng.lognormal(0.0, 0.25, (days, slots))
        true[i] = level_wh * day_factor[:, None] * shape[None, :] * noise
    ids = [f"M{i:02d}" for i in range(meters)]
    return Fleet(ids, [i * 2 // meters for i in range(meters)], ["T1", "T2"], true, true.copy())


def write_readings(
    path: Path, fleet: Fleet, *, transformer_column: bool = False, daily: bool = False
) -> None:
    energy = fleet.metered_wh.sum(axis=2, keepdims=True) if daily else fleet.metered_wh
    slots = energy.shape[2]
    step = timedelta(minutes=1440 // slots)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["meter_id", "timestamp", "energy_wh", *(["transformer_id"] if transformer_column else [])]
        )
        for i, meter in enumerate(fleet.meter_ids):
            extra = [fleet.transformer_ids[fleet.transformer_of[i]]] if transformer_column else []
            for d in range(energy.shape[1]):
                start = datetime.combine(FIRST_DAY + timedelta(days=d), datetime.min.time(), tzinfo=UTC)
                for s in range(slots):
                    writer.writerow([meter, (start + s * step).isoformat(), round(energy[i, d, s]), *extra])


def write_transformers(path: Path, fleet: Fleet) -> None:
    daily = fleet.transformer_daily_wh()
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["transformer_id", "timestamp", "energy_wh"])
        for j, tx in enumerate(fleet.transformer_ids):
            for d in range(daily.shape[1]):
                writer.writerow([tx, f"{FIRST_DAY + timedelta(days=d)}T00:00:00Z", round(daily[j, d])])


def write_mapping(path: Path, fleet: Fleet) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["meter_id", "transformer_id"])
        for i, meter in enumerate(fleet.meter_ids):
            writer.writerow([meter, fleet.transformer_ids[fleet.transformer_of[i]]])
