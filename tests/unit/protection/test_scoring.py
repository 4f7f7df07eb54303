"""The scorer ranks a meter whose fall reappears as transformer loss above an honest household that simply uses
less; a flat (h5-like) profile ranks first at 30-minute resolution; tamper events push a meter up."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from openami.protection.features import daily_totals_wh, level_change
from openami.protection.scoring import MeterScore, robust_z, score_meters
from tests.unit.protection.fleet import FIRST_DAY, Fleet, honest_fleet


def _score(
    fleet: Fleet, *, balance: bool = True, events: list | None = None, daily: bool = False
) -> list[MeterScore]:
    energy = fleet.metered_wh.sum(axis=2, keepdims=True) if daily else fleet.metered_wh
    return score_meters(
        fleet.meter_ids,
        energy,
        FIRST_DAY,
        meter_transformer=np.array(fleet.transformer_of, dtype=np.int64),
        transformer_ids=fleet.transformer_ids if balance else (),
        transformer_daily_wh=fleet.transformer_daily_wh() if balance else None,
        events=events or [],
    )


def _halve_from_day_20(fleet: Fleet, thief: str, vacant: str) -> None:
    """The thief's meter records half from day 20 while the household uses as before; the vacant household
    really uses half from day 20 (its transformer sees the drop too)."""
    fleet.metered_wh[fleet.index(thief), 20:] *= 0.5
    fleet.true_wh[fleet.index(vacant), 20:] *= 0.5
    fleet.metered_wh[fleet.index(vacant), 20:] *= 0.5


def test_a_fall_that_reappears_as_transformer_loss_ranks_first() -> None:
    fleet = honest_fleet()
    _halve_from_day_20(fleet, thief="M02", vacant="M08")
    ranked = _score(fleet)
    assert ranked[0].meter_id == "M02"
    assert ranked[0].score > 2 * next(r.score for r in ranked if r.meter_id == "M08")
    words = " ".join(ranked[0].reasons)
    assert "consumption fell" in words
    assert "from 2026-03-2" in words  # day 20 is 2026-03-21; the change point may sit a day either side
    assert "transformer T1 loss rose" in words
    # Its honest neighbours' noise must not borrow the evidence of the loss the thief caused.
    neighbours = [r for r in ranked if r.meter_id in {"M00", "M01", "M03", "M04", "M05"}]
    assert all("loss rose" not in " ".join(r.reasons) for r in neighbours)


def test_without_the_balance_the_two_falls_look_alike() -> None:
    """The balance is what separates them: without check meters the thief's lead over the vacant home shrinks."""
    fleet = honest_fleet()
    _halve_from_day_20(fleet, thief="M02", vacant="M08")
    with_balance = {r.meter_id: r.score for r in _score(fleet)}
    without = {r.meter_id: r.score for r in _score(fleet, balance=False)}
    assert with_balance["M02"] - with_balance["M08"] > without["M02"] - without["M08"] + 4


def test_the_balance_also_ranks_the_thief_first_from_daily_totals() -> None:
    fleet = honest_fleet()
    _halve_from_day_20(fleet, thief="M09", vacant="M03")
    ranked = _score(fleet, daily=True)
    assert ranked[0].meter_id == "M09"
    assert "transformer T2 loss rose" in " ".join(ranked[0].reasons)


def test_a_flat_profile_ranks_above_honest_meters_at_30_minutes() -> None:
    fleet = honest_fleet()
    flat = fleet.index("M05")
    fleet.metered_wh[flat] = fleet.metered_wh[flat].mean(axis=1, keepdims=True)  # h5: each day's mean
    ranked = _score(fleet, balance=False)
    assert ranked[0].meter_id == "M05"
    assert any("flat intraday profile" in reason for reason in ranked[0].reasons)
    # Daily totals are unchanged by h5: at daily resolution it must not stand out.
    daily_rank = [r.meter_id for r in _score(fleet, balance=False, daily=True)]
    assert daily_rank.index("M05") > 0


def test_tamper_events_push_a_meter_up() -> None:
    fleet = honest_fleet()
    before = [r.meter_id for r in _score(fleet)]
    target = before[-1]
    events = [
        (target, datetime(2026, 3, 10, 2, tzinfo=UTC), datetime(2026, 3, 10, 6, tzinfo=UTC), "MAGNETIC"),
        (target, datetime(2026, 3, 12, 2, tzinfo=UTC), None, "COVER_OPEN"),
    ]
    after = _score(fleet, events=events)
    assert after[0].meter_id == target
    assert "2 tamper events" in after[0].reasons[0]
    assert "MAGNETIC (4.0 h)" in after[0].reasons[0]


def test_scores_are_sorted_and_honest_meters_have_nothing_to_say() -> None:
    ranked = _score(honest_fleet())
    scores = [r.score for r in ranked]
    assert scores == sorted(scores, reverse=True)
    assert sum(r.reasons == ("nothing stands out",) for r in ranked) >= len(ranked) // 2


def test_level_change_finds_the_day_and_the_fall() -> None:
    daily = np.full((1, 30), 1000.0)
    daily[0, 12:] = 400.0
    daily[0, 5] = np.nan  # a missing day changes nothing
    change = level_change(daily)
    assert change.day[0] == 12
    assert change.fall[0] == 0.6


def test_daily_totals_scale_a_day_with_a_gap_and_drop_a_day_mostly_missing() -> None:
    energy = np.full((1, 2, 4), 100.0)
    energy[0, 0, 1] = np.nan  # 3 of 4 intervals: scaled up
    energy[0, 1, :2] = np.nan  # 2 of 4: too few to judge
    totals = daily_totals_wh(energy)
    assert totals[0, 0] == 400.0
    assert np.isnan(totals[0, 1])


def test_robust_z_uses_the_floor_for_identical_meters() -> None:
    z = robust_z(np.array([1.0, 1.0, 1.0, 1.5, np.nan]), mad_floor=0.1)
    assert z[:3].tolist() == [0.0, 0.0, 0.0]
    assert abs(z[3] - 0.5 / 0.14826) < 1e-9
    assert np.isnan(z[4])
