"""Labelled theft data sets: reproducible, balanced at each transformer, and written in the scorer's formats."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from openami.simulator.dataset import (
    CHECK_METER_NOISE_CLIP_SIGMAS,
    CHECK_METER_NOISE_SIGMA,
    NO_LOAD_LOSS_SHARE,
    RATED_LOAD_LOSS_SHARE,
    TheftDataset,
    generate,
    technical_losses_w,
    write_csv,
)
from openami.simulator.theft import PHYSICAL_ATTACKS, Attack, HonestChange, TamperCode

START = datetime(2026, 3, 2, tzinfo=UTC)


@lru_cache(maxsize=8)
def _dataset(seed: int = 11, resolution_min: int = 30, **kwargs: object) -> TheftDataset:
    return generate(seed, 60, 16, resolution_min, 0.4, start=START, **kwargs)  # type: ignore[arg-type]


def _daily(values: np.ndarray, per_day: int) -> np.ndarray:
    return values.reshape(values.shape[0], -1, per_day).sum(axis=2)


def test_the_same_seed_reproduces_the_data_set_and_another_seed_does_not() -> None:
    a, b = _dataset(), generate(11, 60, 16, 30, 0.4, start=START)
    for name in (
        "true_wh",
        "reported_wh",
        "present",
        "transformer_wh",
        "transformer_of",
        "labels",
        "start_days",
    ):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.kinds == b.kinds
    assert a.events == b.events
    other = generate(12, 60, 16, 30, 0.4, start=START)
    assert not np.array_equal(a.true_wh, other.true_wh)


def test_thieves_and_honest_changes_are_dealt_out_as_asked() -> None:
    data = _dataset()
    assert int(data.labels.sum()) == 24
    thieves = [k for k, label in zip(data.kinds, data.labels, strict=True) if label]
    assert set(thieves) == {a.value for a in Attack}, "24 thieves cover all 14 attack kinds"
    honest = [k for k, label in zip(data.kinds, data.labels, strict=True) if not label]
    changes = Counter(k for k in honest if k != "none")
    assert sum(changes.values()) == 7, "20 % of the 36 honest customers"
    assert set(changes) == {c.value for c in HonestChange}
    assert set(changes.values()) == {1, 2}, "the changes are dealt out evenly"
    assert data.true_wh.shape == (60, 16 * 48)
    assert (data.true_wh >= 0).all()
    assert 3_000 < np.median(_daily(data.true_wh, 48)) < 30_000, "a household uses a few kWh a day"


def test_attacks_and_changes_start_in_the_middle_half_and_not_before() -> None:
    data = _dataset()
    for meter, kind in enumerate(data.kinds):
        first_day = int(data.start_days[meter])
        if kind == "none":
            assert first_day == -1
            np.testing.assert_array_equal(data.reported_wh[meter], data.true_wh[meter])
            continue
        assert 4 <= first_day <= 12
        if data.labels[meter]:
            before = slice(0, first_day * 48)
            np.testing.assert_array_equal(data.reported_wh[meter, before], data.true_wh[meter, before])
            assert not np.array_equal(data.reported_wh[meter], data.true_wh[meter]), kind
        else:
            np.testing.assert_array_equal(data.reported_wh[meter], data.true_wh[meter])


def test_thieves_report_less_than_they_draw_except_h5_and_h6() -> None:
    data = _dataset()
    for meter, kind in enumerate(data.kinds):
        if data.labels[meter] and kind not in {"h5", "h6"}:
            after = slice(int(data.start_days[meter]) * 48, None)
            assert data.reported_wh[meter, after].sum() < data.true_wh[meter, after].sum(), kind


def test_daily_totals_cannot_reveal_h5_and_h6() -> None:
    data = generate(5, 20, 12, 30, 1.0, start=START, attacks=(Attack.H5_DAILY_MEAN, Attack.H6_REVERSED_DAY))
    assert set(data.kinds) == {"h5", "h6"}
    np.testing.assert_array_equal(_daily(data.reported_wh, 48), _daily(data.true_wh, 48))
    for meter in range(20):
        after = slice(int(data.start_days[meter]) * 48, None)
        assert not np.array_equal(data.reported_wh[meter, after], data.true_wh[meter, after])
    daily = generate(
        5, 20, 12, 1440, 1.0, start=START, attacks=(Attack.H5_DAILY_MEAN, Attack.H6_REVERSED_DAY)
    )
    np.testing.assert_array_equal(daily.reported_wh, daily.true_wh)


def test_check_meter_measures_the_true_total_plus_losses_within_its_noise() -> None:
    for resolution_min in (15, 1440):
        data = generate(3, 50, 10, resolution_min, 0.3, start=START, customers_per_transformer=(5, 15))
        customers = np.zeros_like(data.transformer_wh)
        np.add.at(customers, data.transformer_of, data.true_wh)
        expected = customers + data.technical_loss_wh
        noise = data.transformer_wh - expected
        bound = CHECK_METER_NOISE_CLIP_SIGMAS * CHECK_METER_NOISE_SIGMA * expected + 1.0
        assert (np.abs(noise) <= bound).all()
        assert np.abs(noise).max() > 1.0, "the check meter is not noiseless"
        # Thieves change what meters report, never what the transformer sees.
        reported = np.zeros_like(data.transformer_wh)
        np.add.at(reported, data.transformer_of, data.reported_wh)
        assert reported.sum() < customers.sum()
        assert data.technical_loss_wh.min() > 0


def test_technical_losses_are_a_fixed_part_plus_the_square_of_the_load() -> None:
    rating_w = 100_000.0
    assert technical_losses_w(np.array([0.0]), rating_w)[0] == pytest.approx(NO_LOAD_LOSS_SHARE * rating_w)
    at_rated = technical_losses_w(np.array([rating_w]), rating_w)[0]
    assert at_rated == pytest.approx((NO_LOAD_LOSS_SHARE + RATED_LOAD_LOSS_SHARE) * rating_w)
    fixed = NO_LOAD_LOSS_SHARE * rating_w
    half, full = technical_losses_w(np.array([20_000.0, 40_000.0]), rating_w)
    assert full - fixed == pytest.approx(4 * (half - fixed))
    with pytest.raises(ValueError, match="rating must be positive"):
        technical_losses_w(np.array([1.0]), 0.0)


def test_tamper_events_come_from_physical_thieves_and_rare_honest_false_alarms() -> None:
    data = _dataset(tamper_event_share=1.0, false_event_share=0.0)
    index = {meter_id: i for i, meter_id in enumerate(data.meter_ids)}
    with_events = {index[e.meter_id] for e in data.events}
    physical = {i for i, kind in enumerate(data.kinds) if kind in {a.value for a in PHYSICAL_ATTACKS}}
    assert with_events == physical
    codes = {e.code for e in data.events}
    assert codes <= {c.value for c in TamperCode}
    for event in data.events:
        assert event.start.tzinfo is not None
        assert event.end is None or event.end > event.start
    none = _dataset(tamper_event_share=0.0, false_event_share=1.0)
    honest = {i for i, label in enumerate(none.labels) if not label}
    assert {index[e.meter_id] for e in none.events} == honest


def test_written_files_parse_back_to_the_data_set(tmp_path: Path) -> None:
    data = _dataset(missing_share=0.01)
    files = write_csv(tmp_path, data)
    assert files.labels.parent != files.readings.parent, "labels are kept apart from the inputs"

    with files.readings.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["meter_id", "timestamp", "energy_wh"]
    assert len(rows) == int(data.present.sum()) < data.present.size
    index = {meter_id: i for i, meter_id in enumerate(data.meter_ids)}
    for row in rows[:: max(1, len(rows) // 2000)]:
        at = datetime.fromisoformat(row["timestamp"])
        assert at.utcoffset() == timedelta(0)
        k = int((at - START) / timedelta(minutes=30))
        assert int(row["energy_wh"]) == max(int(data.reported_wh[index[row["meter_id"]], k]), 0)

    with files.transformers.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["transformer_id", "timestamp", "energy_wh"]
    assert len(rows) == data.transformer_wh.size
    total = sum(int(row["energy_wh"]) for row in rows)
    assert total == int(data.transformer_wh.sum())

    with files.mapping.open(newline="") as f:
        mapping = {row["meter_id"]: row["transformer_id"] for row in csv.DictReader(f)}
    assert mapping == {
        m: data.transformer_ids[t] for m, t in zip(data.meter_ids, data.transformer_of.tolist(), strict=True)
    }

    with files.events.open(newline="") as f:
        events = list(csv.DictReader(f))
    assert len(events) == len(data.events) > 0
    for row, event in zip(events, data.events, strict=True):
        assert (row["meter_id"], row["code"]) == (event.meter_id, event.code)
        assert datetime.fromisoformat(row["start"]) == event.start
        assert (datetime.fromisoformat(row["end"]) if row["end"] else None) == event.end

    with files.labels.open(newline="") as f:
        labels = list(csv.DictReader(f))
    assert [(r["meter_id"], int(r["label"]), r["attack"]) for r in labels] == list(
        zip(data.meter_ids, data.labels.tolist(), data.kinds, strict=True)
    )


def test_daily_resolution_has_one_reading_per_meter_and_day(tmp_path: Path) -> None:
    data = _dataset(resolution_min=1440)
    assert data.true_wh.shape == (60, 16)
    assert data.interval_starts()[1] - data.interval_starts()[0] == timedelta(days=1)
    files = write_csv(tmp_path, data)
    with files.readings.open(newline="") as f:
        first = next(csv.DictReader(f))
    assert first["timestamp"] == "2026-03-02T00:00:00Z"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resolution_min": 60}, "resolution_min must be one of"),
        ({"theft_share": 1.5}, "theft_share must be within 0..1"),
        ({"days": 3}, "at least 1 customer and 8 days"),
        ({"start": datetime(2026, 3, 2, 6, tzinfo=UTC)}, "start must be a UTC midnight"),
    ],
)
def test_bad_arguments_say_what_is_wrong(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "seed": 1,
        "customers": 5,
        "days": 10,
        "resolution_min": 30,
        "theft_share": 0.2,
        "start": START,
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        generate(**arguments)  # type: ignore[arg-type]
