"""Tamper detection in the meter: what the front end's inputs reveal about interference, and how energy is
registered while it lasts.

Four conditions come from the metrology sample, each detected once it has held for `detect_after_s` seconds
of measuring and ended once it has been absent for `clear_after_s` (so a transient neither opens nor closes an
episode). Each start and each end is one event, stamped by the meter's clock at the instant the persistence
time ran out; the detail says since when the condition (or its absence) had held.

- **Current mismatch** (earth load, or a bypass of the phase or neutral element): phase and neutral current
  differ by more than `mismatch_min_ma` *and* by more than `mismatch_fraction` of the larger one. Both limits
  must be passed: the absolute one keeps CT noise at small loads from tripping, the relative one keeps ratio
  error at large loads from tripping. Phase above neutral is an earth return; neutral above phase a phase
  bypass; the detail says which.
- **Neutral missing / single-wire operation**: the meter's voltage path runs from phase to neutral, so when the
  neutral is cut at the meter (the load returning through earth) the measured `voltage_v` collapses while
  current still flows. So: `voltage_v` below `neutral_missing_voltage_fraction` of the nominal voltage with
  the larger current at or above `current_present_ma`. The meter is assumed to stay on (CT-powered or
  battery-backed supply, as anti-tamper meters are), which is what `Meter.powered` says.
- **Reverse current**: energy flowing out (`Sample.export`) with at least `current_present_ma` of phase current
  on a meter whose `export_allowed` is False.
- **Magnetic field**: the field sensor's `Sample.magnetic_field_mt` at or above `magnet_threshold_mt`.

Meter and terminal cover switches are not in the sample: `Meter.open_cover` / `close_cover` report them, and
need no persistence (a switch is debounced in hardware).

Registration while a condition is present (`registered_power_w`) follows what anti-tamper meters do:

- mismatch: on the larger of the two currents, from the first second (the larger current is simply the better
  measurement of what is drawn; the persistence time only guards the event log);
- neutral missing: the larger current at the nominal voltage and unity power factor (there is no voltage to
  measure, nor an angle to measure against), also from the first second;
- reverse current where export is not allowed: counted as import;
- magnetic field: only once detected and while the field is there, at no less than
  `magnet_register_current_ma` when that is set (None: the measured current). It is a penalty, not a
  measurement, so a passing field shorter than the persistence time does not trigger it.

Everything here is pure: no clock, no I/O; the meter drives it with true epoch seconds.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from openami.device.config import is_int, is_number
from openami.device.events import Event, EventCode
from openami.device.metrology import Sample


class TamperCondition(enum.StrEnum):
    """A condition the metrology detects, each with a start and an end event."""

    CURRENT_MISMATCH = "current_mismatch"
    NEUTRAL_MISSING = "neutral_missing"
    REVERSE_CURRENT = "reverse_current"
    MAGNETIC_FIELD = "magnetic_field"


class Cover(enum.StrEnum):
    """A sealed cover with a battery-backed switch."""

    METER = "meter"
    TERMINAL = "terminal"


CONDITION_EVENTS: dict[TamperCondition, tuple[EventCode, EventCode]] = {
    TamperCondition.CURRENT_MISMATCH: (
        EventCode.CURRENT_MISMATCH_DETECTED,
        EventCode.CURRENT_MISMATCH_CLEARED,
    ),
    TamperCondition.NEUTRAL_MISSING: (EventCode.NEUTRAL_MISSING_DETECTED, EventCode.NEUTRAL_MISSING_CLEARED),
    TamperCondition.REVERSE_CURRENT: (EventCode.REVERSE_CURRENT_DETECTED, EventCode.REVERSE_CURRENT_CLEARED),
    TamperCondition.MAGNETIC_FIELD: (EventCode.MAGNETIC_FIELD_DETECTED, EventCode.MAGNETIC_FIELD_CLEARED),
}
COVER_EVENTS: dict[Cover, tuple[EventCode, EventCode]] = {
    Cover.METER: (EventCode.METER_COVER_OPENED, EventCode.METER_COVER_CLOSED),
    Cover.TERMINAL: (EventCode.TERMINAL_COVER_OPENED, EventCode.TERMINAL_COVER_CLOSED),
}
# Every event that opens an episode, with the one that closes it (power outages are episodes too).
EPISODE_ENDS: dict[EventCode, EventCode] = {
    **dict(CONDITION_EVENTS.values()),
    **dict(COVER_EVENTS.values()),
    EventCode.POWER_DOWN: EventCode.POWER_UP,
}

_CONDITIONS = tuple(TamperCondition)


@dataclass(frozen=True)
class TamperConfig:
    """Thresholds and persistence times of tamper detection, fixed at manufacture (see the module docstring).

    Fractions are of the larger current (mismatch) or of the nominal voltage (neutral missing); currents in mA,
    field in mT, times in seconds of measuring. `export_allowed` False makes energy flowing out a tamper
    condition, registered as import; True (the default) is a net meter that counts it as export."""

    mismatch_fraction: float = 0.0625
    mismatch_min_ma: int = 1000
    neutral_missing_voltage_fraction: float = 0.2
    current_present_ma: int = 100
    export_allowed: bool = True
    magnet_threshold_mt: float = 100.0
    magnet_register_current_ma: int | None = None
    detect_after_s: float = 60.0
    clear_after_s: float = 60.0

    def __post_init__(self) -> None:
        def fail(name: str, rule: str) -> ValueError:
            return ValueError(f"TamperConfig.{name} {rule}, got {getattr(self, name)!r}")

        for name in ("mismatch_fraction", "neutral_missing_voltage_fraction"):
            value = getattr(self, name)
            if not is_number(value) or not 0.0 <= value < 1.0:
                raise fail(name, "must be a number from 0 up to (not including) 1")
        for name in ("mismatch_min_ma", "current_present_ma"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise fail(name, "must be a whole number of mA, not negative")
        if self.export_allowed not in (True, False):
            raise fail("export_allowed", "must be True or False")
        if not is_number(self.magnet_threshold_mt) or self.magnet_threshold_mt <= 0:
            raise fail("magnet_threshold_mt", "must be a positive number of mT")
        if self.magnet_register_current_ma is not None and (
            not is_int(self.magnet_register_current_ma) or self.magnet_register_current_ma <= 0
        ):
            raise fail("magnet_register_current_ma", "must be None or a positive whole number of mA")
        for name in ("detect_after_s", "clear_after_s"):
            if not is_number(getattr(self, name)) or getattr(self, name) < 0:
                raise fail(name, "must be a number of seconds, 0 or more")


def _present_flags(
    sample: Sample, config: TamperConfig, nominal_voltage_v: float, flowing: bool
) -> tuple[bool, bool, bool, bool]:
    """Whether `sample` shows each condition, in `TamperCondition` order; no allocation beyond the tuple,
    because the meter asks on every step."""
    magnet = sample.magnetic_field_mt >= config.magnet_threshold_mt
    if not flowing:
        return False, False, False, magnet
    phase_a = sample.phase_current_a
    neutral_a = sample.neutral_current_a
    larger_a = max(phase_a, neutral_a)
    difference_a = abs(phase_a - neutral_a)
    mismatch = (
        difference_a * 1000.0 > config.mismatch_min_ma and difference_a > config.mismatch_fraction * larger_a
    )
    neutral_missing = (
        larger_a * 1000.0 >= config.current_present_ma
        and sample.voltage_v < config.neutral_missing_voltage_fraction * nominal_voltage_v
    )
    reverse = sample.export and not config.export_allowed and phase_a * 1000.0 >= config.current_present_ma
    return mismatch, neutral_missing, reverse, magnet


def conditions_present(
    sample: Sample, config: TamperConfig, nominal_voltage_v: float, *, flowing: bool = True
) -> frozenset[TamperCondition]:
    """The conditions `sample` shows on its own (before any persistence time). With `flowing` False (the relay
    is open) no current flows, so only the magnetic field can be present."""
    flags = _present_flags(sample, config, nominal_voltage_v, flowing)
    return frozenset(condition for condition, flag in zip(_CONDITIONS, flags, strict=True) if flag)


def registered_power_w(
    sample: Sample,
    config: TamperConfig,
    nominal_voltage_v: float,
    phases: int,
    *,
    magnet_detected: bool = False,
) -> tuple[float, bool]:
    """The power W the meter registers for `sample` through a closed relay, and whether it counts as export,
    by the rules of the module docstring. `magnet_detected` is True once the field has outlasted the
    persistence time."""
    present = conditions_present(sample, config, nominal_voltage_v)
    voltage_v = sample.voltage_v
    current_a = sample.phase_current_a
    power_factor = sample.power_factor
    larger_a = max(sample.phase_current_a, sample.neutral_current_a)
    if TamperCondition.CURRENT_MISMATCH in present:
        current_a = larger_a
    if TamperCondition.NEUTRAL_MISSING in present:
        voltage_v, current_a, power_factor = nominal_voltage_v, larger_a, 1.0
    if (
        magnet_detected
        and TamperCondition.MAGNETIC_FIELD in present
        and config.magnet_register_current_ma is not None
    ):
        current_a = max(current_a, config.magnet_register_current_ma / 1000.0)
    export = sample.export and config.export_allowed
    return voltage_v * current_a * power_factor * phases, export


@dataclass(frozen=True, slots=True)
class Transition:
    """A condition starting (`started` True) or ending at true instant `true_s`; `since_s` is when the
    condition (or, for an end, its absence) began to hold."""

    true_s: float
    condition: TamperCondition
    started: bool
    since_s: float


class TamperDetector:
    """The persistence timers of the four conditions: which are active (start logged, end not yet) and how
    long each has held towards its next transition."""

    __slots__ = ("_active", "_config", "_held_s", "_nominal_voltage_v", "_since_s")

    def __init__(self, config: TamperConfig, nominal_voltage_v: float) -> None:
        self._config = config
        self._nominal_voltage_v = nominal_voltage_v
        self._active: set[TamperCondition] = set()
        self._held_s = dict.fromkeys(_CONDITIONS, 0.0)  # towards the next transition, seconds measured
        self._since_s = dict.fromkeys(_CONDITIONS, 0.0)

    @property
    def config(self) -> TamperConfig:
        return self._config

    @property
    def active(self) -> frozenset[TamperCondition]:
        """Conditions whose start has been logged and whose end has not."""
        return frozenset(self._active)

    def registered_power_w(self, sample: Sample, phases: int) -> tuple[float, bool]:
        """`registered_power_w` with this meter's settings and magnet state."""
        return registered_power_w(
            sample,
            self._config,
            self._nominal_voltage_v,
            phases,
            magnet_detected=TamperCondition.MAGNETIC_FIELD in self._active,
        )

    def is_plain(self, sample: Sample, *, flowing: bool) -> bool:
        """True when `sample` shows no condition and no timer is running or condition active: the meter's
        fast path, which registers the sample as measured."""
        return (
            not self._active
            and not any(self._held_s.values())
            and not any(_present_flags(sample, self._config, self._nominal_voltage_v, flowing))
        )

    def advance(self, t0: float, duration_s: float, sample: Sample, *, flowing: bool) -> Transition | None:
        """Measure `sample` from true `t0` for up to `duration_s` seconds, stopping at the first transition:
        returns it (its timers then stand at its instant) or None when the whole span passed without one."""
        present = conditions_present(sample, self._config, self._nominal_voltage_v, flowing=flowing)
        first: TamperCondition | None = None
        first_need = math.inf
        for condition in _CONDITIONS:
            is_active = condition in self._active
            if (condition in present) != is_active:  # counting towards a start or an end
                limit = self._config.clear_after_s if is_active else self._config.detect_after_s
                need = max(0.0, limit - self._held_s[condition])
                if need < first_need:
                    first, first_need = condition, need
            else:
                self._held_s[condition] = 0.0
        span = duration_s if first is None or first_need > duration_s else first_need
        for condition in _CONDITIONS:
            if (condition in present) != (condition in self._active):
                if self._held_s[condition] == 0.0:
                    self._since_s[condition] = t0
                self._held_s[condition] += span
        if first is None or first_need > duration_s:
            return None
        started = first not in self._active
        if started:
            self._active.add(first)
        else:
            self._active.discard(first)
        self._held_s[first] = 0.0
        return Transition(t0 + span, first, started, self._since_s[first])

    def power_lost(self) -> None:
        """Nothing is measured without supply: the timers start afresh. Active conditions stay active (their
        flags are kept in non-volatile memory) until they are seen to clear."""
        for condition in _CONDITIONS:
            self._held_s[condition] = 0.0


@dataclass(frozen=True, slots=True)
class TamperEpisode:
    """One episode from the event log: `code` is its start event, `ended_at` None while it lasts."""

    code: EventCode
    started_at: datetime
    ended_at: datetime | None
    start_sequence: int
    end_sequence: int | None


def tamper_episodes(events: Iterable[Event]) -> list[TamperEpisode]:
    """Pair each start event (tamper condition, cover opened, power down) with the end event that follows
    it, in log order; an end whose start is no longer in the bounded log is left out. Episodes are returned
    in the order they started; one still going has `ended_at` None."""
    closes = {end: start for start, end in EPISODE_ENDS.items()}
    starts: list[Event] = []
    ends: dict[int, Event] = {}  # start sequence -> its end
    open_: dict[EventCode, Event] = {}
    for event in events:
        if event.code in EPISODE_ENDS and event.code not in open_:
            open_[event.code] = event
            starts.append(event)
        elif event.code in closes and closes[event.code] in open_:
            ends[open_.pop(closes[event.code]).sequence] = event
    episodes = []
    for start in starts:
        end = ends.get(start.sequence)
        episodes.append(
            TamperEpisode(
                start.code,
                start.occurred_at,
                None if end is None else end.occurred_at,
                start.sequence,
                None if end is None else end.sequence,
            )
        )
    return episodes
