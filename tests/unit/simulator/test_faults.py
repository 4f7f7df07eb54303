"""FaultyLink: faults are applied exactly as planned, deterministically, and counted."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from openami.common.errors import FrameRejected
from openami.common.obis import ACTIVE_IMPORT_INTERVAL, ACTIVE_IMPORT_TOTAL
from openami.headend.codec import Frame, UplinkContent, decode_uplink, encode_uplink, parse_topic, verify
from openami.readings.interfaces import IntervalValue, RegisterValue
from openami.simulator.faults import FaultCounts, FaultPlan, FaultyLink, Outage

T0 = datetime(2026, 3, 2, tzinfo=UTC)
KEYS = {f"M{i:04d}": bytes([i + 1]) * 32 for i in range(5)}


def _frames(batch: int) -> list[Frame]:
    """One data frame per meter for push number `batch` (counter = batch + 1)."""
    out = []
    for serial, key in KEYS.items():
        start = T0 + timedelta(minutes=15 * batch)
        content = UplinkContent(
            serial=serial,
            meter_time=start + timedelta(minutes=15),
            intervals=[IntervalValue(ACTIVE_IMPORT_INTERVAL, start, 900, 100 + batch)],
            registers=[RegisterValue(ACTIVE_IMPORT_TOTAL, start + timedelta(minutes=15), 1000 + batch)],
        )
        out.append(encode_uplink(content, key=key, counter=batch + 1, topic_root="t/v1", site_code="S1"))
    return out


class _StrictHeadEnd:
    """Just enough of a head-end to classify frames: known keys, MAC, exact anti-replay (no window)."""

    def __init__(self) -> None:
        self.seen: dict[str, set[int]] = {s: set() for s in KEYS}
        self.outcomes: Counter[str] = Counter()
        self.accepted: list[Frame] = []
        self.batches = 0

    def __call__(self, frames: list[Frame]) -> None:
        self.batches += 1
        for frame in frames:
            serial = parse_topic(frame.topic).serial
            if serial not in KEYS:
                self.outcomes["unknown_meter"] += 1
                continue
            try:
                verify(frame, KEYS[serial])
            except FrameRejected as exc:
                self.outcomes[exc.reason] += 1
                continue
            if frame.counter in self.seen[serial]:
                self.outcomes["replayed"] += 1
                continue
            self.seen[serial].add(frame.counter)
            decode_uplink(frame)
            self.outcomes["accepted"] += 1
            self.accepted.append(frame)


def _run(plan: FaultPlan, seed: int = 1, batches: int = 40) -> tuple[_StrictHeadEnd, FaultCounts]:
    head_end = _StrictHeadEnd()
    link = FaultyLink(head_end, plan, seed=seed)
    for batch in range(batches):
        link(_frames(batch))
    link.flush()
    return head_end, link.counts


def test_no_faults_delivers_everything_once_in_order() -> None:
    delivered: list[Frame] = []
    link = FaultyLink(delivered.extend, FaultPlan(), seed=3)
    sent = _frames(0) + _frames(1)
    link(sent)
    assert delivered == sent
    assert link.counts.frames_offered == link.counts.frames_delivered == len(sent)


def test_every_frame_dropped_when_the_plan_says_so() -> None:
    head_end, counts = _run(FaultPlan(drop_share=1.0), batches=3)
    assert head_end.batches == 0
    assert counts.dropped == counts.frames_offered == 15
    assert sorted(set(counts.dropped_serials)) == sorted(KEYS)


def test_duplicates_follow_their_original() -> None:
    delivered: list[Frame] = []
    link = FaultyLink(delivered.extend, FaultPlan(duplicate_share=1.0), seed=3)
    sent = _frames(0)
    link(sent)
    assert delivered == [f for frame in sent for f in (frame, frame)]
    assert link.counts.duplicated == len(sent)


def test_reordered_frames_arrive_after_the_next_batch_started() -> None:
    calls: list[list[Frame]] = []
    link = FaultyLink(calls.append, FaultPlan(reorder_share=1.0), seed=3)
    first, second = _frames(0), _frames(1)
    link(first)
    assert calls == []
    link(second)
    assert calls == [first]
    link.flush()
    assert calls == [first, second]
    assert link.counts.reordered == 10


def test_flush_with_nothing_held_sends_nothing() -> None:
    calls: list[list[Frame]] = []
    link = FaultyLink(calls.append, FaultPlan(), seed=3)
    link.flush()
    assert calls == []


def test_forgeries_fail_authentication_and_carry_altered_values() -> None:
    delivered: list[Frame] = []
    link = FaultyLink(delivered.extend, FaultPlan(forge_share=1.0), seed=3)
    sent = _frames(0)
    link(sent)
    forged = [f for f in delivered if f not in sent]
    assert len(forged) == len(sent) == link.counts.forged
    for fake in forged:
        serial = parse_topic(fake.topic).serial
        with pytest.raises(FrameRejected) as excinfo:
            verify(fake, KEYS[serial])
        assert excinfo.value.reason == "bad_signature"
        _, _, content = decode_uplink(fake)
        assert content.intervals[0].energy_wh == 100 + 1_000


def test_unknown_meter_frames_are_well_formed_and_from_unregistered_serials() -> None:
    delivered: list[Frame] = []
    link = FaultyLink(delivered.extend, FaultPlan(unknown_meter_share=1.0), seed=3)
    link(_frames(0))
    rogues = [f for f in delivered if parse_topic(f.topic).serial not in KEYS]
    assert len(rogues) == 5 == link.counts.unknown_meter
    assert len({parse_topic(f.topic).serial for f in rogues}) == 5
    for rogue in rogues:
        site_code, kind, content = decode_uplink(rogue)
        assert (site_code, kind) == ("S1", "data")
        assert content.intervals


def test_replays_only_copy_frames_already_delivered_earlier() -> None:
    calls: list[list[Frame]] = []
    link = FaultyLink(calls.append, FaultPlan(replay_share=1.0), seed=3)
    first = _frames(0)
    link(first)
    assert calls == [first]  # nothing recorded yet, so nothing to replay
    link(_frames(1))
    replays = [f for f in calls[1] if f.counter == 1]
    assert len(replays) == 5 == link.counts.replayed
    assert all(r in first for r in replays)


def test_every_fault_is_counted_and_noticed_by_a_strict_head_end() -> None:
    plan = FaultPlan(
        drop_share=0.1,
        duplicate_share=0.1,
        reorder_share=0.1,
        replay_share=0.05,
        forge_share=0.05,
        unknown_meter_share=0.05,
    )
    head_end, counts = _run(plan, batches=60)
    for kind in ("dropped", "duplicated", "reordered", "replayed", "forged", "unknown_meter"):
        assert getattr(counts, kind) > 0, kind
    assert head_end.outcomes["accepted"] == counts.frames_offered - counts.dropped
    assert head_end.outcomes["replayed"] == counts.expected_replayed_rejections
    assert head_end.outcomes["bad_signature"] == counts.forged
    assert head_end.outcomes["unknown_meter"] == counts.unknown_meter
    assert sum(head_end.outcomes.values()) == counts.frames_delivered
    # Nothing dropped was ever accepted.
    accepted = {(parse_topic(f.topic).serial, f.counter) for f in head_end.accepted}
    assert len(accepted) == counts.frames_offered - counts.dropped


def test_same_seed_same_faults() -> None:
    plan = FaultPlan(
        drop_share=0.2, duplicate_share=0.2, reorder_share=0.2, replay_share=0.1, forge_share=0.1
    )
    a_calls: list[list[Frame]] = []
    b_calls: list[list[Frame]] = []
    for calls in (a_calls, b_calls):
        link = FaultyLink(calls.append, plan, seed=99)
        for batch in range(10):
            link(_frames(batch))
        link.flush()
    assert a_calls == b_calls
    other: list[list[Frame]] = []
    link = FaultyLink(other.append, plan, seed=100)
    for batch in range(10):
        link(_frames(batch))
    assert other != a_calls


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"drop_share": 1.5}, "drop_share"),
        ({"forge_share": -0.1}, "forge_share"),
        ({"unknown_meter_share": 2.0}, "unknown_meter_share"),
        ({"drop_share": 0.6, "duplicate_share": 0.6}, "drop_share \\+ duplicate_share"),
        ({"random_outages": -1}, "random_outages"),
        ({"random_outage_hours": (5.0, 1.0)}, "random_outage_hours"),
        ({"clock_drift_ppm_spread": -3.0}, "clock_drift_ppm_spread"),
    ],
)
def test_bad_plans_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        FaultPlan(**kwargs)  # type: ignore[arg-type]


def test_bad_outages_are_named() -> None:
    with pytest.raises(ValueError, match="M0001"):
        Outage("M0001", datetime(2026, 1, 1), 3.0)  # noqa: DTZ001 - naive on purpose
    with pytest.raises(ValueError, match="hours"):
        Outage("M0001", T0, 0.0)
