"""Faults on demand: what the network, the meters and attackers do to a fleet's frames, counted so the demo
can check that the platform noticed every one.

`FaultPlan` says what should go wrong. `FaultyLink` wraps the function delivering frames to the head-end and
applies the transport faults and attacks deterministically from a seed:
- dropped: a frame never arrives (the platform sees a gap and re-reads it);
- duplicated: a frame arrives twice (at-least-once delivery), the copy right after the original;
- reordered: a frame is held back and arrives after the next batch (within the head-end's anti-replay window);
- replayed: an attacker re-sends a frame that was already delivered in an earlier batch, byte for byte;
- forged: an attacker alters a frame's values and, lacking the meter's key, signs it with a key of their own;
- unknown meter: a well-formed frame from a serial the registry does not know.
The head-end should reject every copy of a duplicated frame and every replay as `replayed`, every forgery as
`bad_signature` and every unknown serial as `unknown_meter`; nothing dropped is ever delivered.
The meter-side faults of the plan (outages, clock drift, corrupted memory) are applied by `Fleet`, which
counts them in the same `FaultCounts`.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from openami.common.clock import ensure_aware
from openami.headend.codec import Frame, decode_uplink, encode_uplink, parse_topic

_REPLAY_POOL_SIZE = 512  # delivered frames an attacker has recorded and may send again
_FORGED_COUNTER_JUMP = 1_000  # forgers claim a counter well ahead, as if to lock the real meter out


@dataclass(frozen=True, slots=True)
class Outage:
    """A meter offline from `start` (aware UTC) for `hours`.

    `power=True` is a supply outage: the meter is powered down (POWER_DOWN/POWER_UP events, intervals flagged)
    and the household draws nothing. `power=False` is a communication outage: the meter measures on and fills
    its profile memory but cannot push; when it comes back it pushes everything new.
    """

    serial: str
    start: datetime
    hours: float
    power: bool = True

    def __post_init__(self) -> None:
        ensure_aware(self.start, f"outage start of {self.serial}")
        if not self.hours > 0:
            raise ValueError(f"outage of {self.serial}: hours must be positive, got {self.hours}")


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """What should go wrong. Shares are chances per genuine frame (0..1); counts are numbers of meters."""

    drop_share: float = 0.0
    duplicate_share: float = 0.0
    reorder_share: float = 0.0
    replay_share: float = (
        0.0  # chance, per genuine frame, that an attacker also re-sends an old delivered frame
    )
    forge_share: float = 0.0  # chance, per genuine frame, that an attacker also sends an altered copy of it
    unknown_meter_share: float = (
        0.0  # chance, per genuine frame, that a frame from an unregistered serial arrives too
    )
    outages: tuple[Outage, ...] = ()
    random_outages: int = 0  # meters drawn at random to lose supply once
    random_comms_outages: int = 0  # meters drawn at random to lose communication once (they measure on)
    random_outage_hours: tuple[float, float] = (2.0, 12.0)
    random_outage_within_days: float = 7.0  # random outages start within this many days of the fleet's start
    clock_drift_ppm_spread: float = 0.0  # each meter's RTC drift is drawn uniformly from ±spread ppm
    corrupted_meters: int = 0  # meters whose load-profile memory gets one corrupted copy of an entry

    def __post_init__(self) -> None:
        for name in ("drop_share", "duplicate_share", "reorder_share", "replay_share", "forge_share"):
            _check_share(name, getattr(self, name))
        _check_share("unknown_meter_share", self.unknown_meter_share)
        if self.drop_share + self.duplicate_share + self.reorder_share > 1.0:
            raise ValueError(
                "drop_share + duplicate_share + reorder_share must not exceed 1 (one fate per frame)"
            )
        for name in ("random_outages", "random_comms_outages", "corrupted_meters"):
            if getattr(self, name) < 0:
                raise ValueError(f"FaultPlan.{name} must not be negative, got {getattr(self, name)}")
        low, high = self.random_outage_hours
        if not 0 < low <= high:
            raise ValueError(
                f"FaultPlan.random_outage_hours must be 0 < low <= high, got {self.random_outage_hours}"
            )
        if not self.random_outage_within_days > 0:
            raise ValueError(
                f"FaultPlan.random_outage_within_days must be positive, got {self.random_outage_within_days}"
            )
        if self.clock_drift_ppm_spread < 0:
            raise ValueError(
                f"FaultPlan.clock_drift_ppm_spread must not be negative, got {self.clock_drift_ppm_spread}"
            )


def _check_share(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"FaultPlan.{name} must be within 0..1, got {value}")


@dataclass(slots=True)
class FaultCounts:
    """What was actually done, to compare with what the platform reports."""

    frames_offered: int = 0  # genuine frames handed to the link
    frames_delivered: int = 0  # frames passed on, attacks and copies included
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    replayed: int = 0
    forged: int = 0
    unknown_meter: int = 0
    outages: int = 0  # supply and communication outages that started
    pushes_missed: int = 0  # pushes a meter could not make because it was offline
    drifting_meters: int = 0
    corrupted_entries: int = 0  # profile entries with one copy corrupted
    dropped_serials: list[str] = field(default_factory=list)

    @property
    def expected_replayed_rejections(self) -> int:
        """Every duplicate and every replay carries a counter the head-end has already seen."""
        return self.duplicated + self.replayed


class FaultyLink:
    """Callable like the `deliver(frames)` it wraps; applies the plan's transport faults and attacks.

    Deterministic: the same seed, plan and sequence of calls give the same deliveries. Frames held back for
    reordering are delivered at the next call or by `flush()`.
    """

    def __init__(
        self,
        deliver: Callable[[list[Frame]], None],
        plan: FaultPlan,
        seed: int = 0,
        counts: FaultCounts | None = None,
    ) -> None:
        self._deliver = deliver
        self._plan = plan
        self._rng = random.Random(seed)
        self.counts = counts if counts is not None else FaultCounts()
        self._held: list[Frame] = []
        self._replay_pool: list[Frame] = []
        self._rogue_serials = 0

    def __call__(self, frames: list[Frame]) -> None:
        plan, rng = self._plan, self._rng
        out: list[Frame] = self._held
        delivered_genuine: list[Frame] = list(self._held)
        self._held = []
        attacks: list[Frame] = []
        for frame in frames:
            self.counts.frames_offered += 1
            fate = rng.random()
            if fate < plan.drop_share:
                self.counts.dropped += 1
                self.counts.dropped_serials.append(_serial_of(frame))
            elif fate < plan.drop_share + plan.duplicate_share:
                self.counts.duplicated += 1
                out.extend((frame, frame))
                delivered_genuine.append(frame)
            elif fate < plan.drop_share + plan.duplicate_share + plan.reorder_share:
                self.counts.reordered += 1
                self._held.append(frame)
            else:
                out.append(frame)
                delivered_genuine.append(frame)
            attacks.extend(self._attacks_inspired_by(frame))
        # Attacks land anywhere in the batch: a forgery fails on its MAC wherever it is, and a replay only
        # ever copies a frame sent in an earlier batch, so the head-end has always seen the original first.
        for attack in attacks:
            out.insert(rng.randint(0, len(out)), attack)
        self._remember(delivered_genuine)
        self._send(out)

    def flush(self) -> None:
        """Deliver the frames held back for reordering."""
        held, self._held = self._held, []
        self._remember(held)
        self._send(held)

    def _send(self, frames: list[Frame]) -> None:
        if frames:
            self.counts.frames_delivered += len(frames)
            self._deliver(frames)

    def _attacks_inspired_by(self, frame: Frame) -> list[Frame]:
        plan, rng = self._plan, self._rng
        attacks: list[Frame] = []
        if plan.replay_share and self._replay_pool and rng.random() < plan.replay_share:
            attacks.append(self._replay_pool[rng.randrange(len(self._replay_pool))])
            self.counts.replayed += 1
        if plan.forge_share and rng.random() < plan.forge_share:
            attacks.append(self._forge(frame))
            self.counts.forged += 1
        if plan.unknown_meter_share and rng.random() < plan.unknown_meter_share:
            attacks.append(self._from_unknown_meter(frame))
            self.counts.unknown_meter += 1
        return attacks

    def _remember(self, frames: list[Frame]) -> None:
        """Keep a bounded sample of delivered frames to replay later; old ones make way at random."""
        for frame in frames:
            if len(self._replay_pool) < _REPLAY_POOL_SIZE:
                self._replay_pool.append(frame)
            else:
                self._replay_pool[self._rng.randrange(_REPLAY_POOL_SIZE)] = frame

    def _forge(self, frame: Frame) -> Frame:
        """The frame with its energy raised, signed with a key that is not the meter's."""
        site_code, kind, content = decode_uplink(frame)
        if content.intervals:
            first = content.intervals[0]
            content.intervals[0] = first._replace(energy_wh=first.energy_wh + 1_000)
        elif content.registers:
            first_register = content.registers[0]
            content.registers[0] = first_register._replace(energy_wh=first_register.energy_wh + 1_000)
        return encode_uplink(
            content,
            key=self._rng.randbytes(32),
            counter=frame.counter + _FORGED_COUNTER_JUMP,
            topic_root=_topic_root_of(frame),
            site_code=site_code,
            kind=kind,
        )

    def _from_unknown_meter(self, frame: Frame) -> Frame:
        site_code, kind, content = decode_uplink(frame)
        self._rogue_serials += 1
        rogue = dataclasses.replace(content, serial=f"ROGUE{self._rogue_serials:06d}")
        return encode_uplink(
            rogue,
            key=self._rng.randbytes(32),
            counter=1,
            topic_root=_topic_root_of(frame),
            site_code=site_code,
            kind=kind,
        )


def _serial_of(frame: Frame) -> str:
    return parse_topic(frame.topic).serial


def _topic_root_of(frame: Frame) -> str:
    return parse_topic(frame.topic).root
