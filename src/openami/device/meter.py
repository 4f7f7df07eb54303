"""The software meter: metrology, registers per tariff rate, load-profile memory, event log, relay and a
drifting clock, driven by the caller with explicit true instants.

The caller (the simulator) owns true time and says what the front end measured during each step. The meter
keeps its own clock, which drifts, and does everything a meter does by that clock: it closes load-profile
intervals when its clock crosses a boundary and picks the tariff rate from its clock's local time.

Energy is counted the way a meter's pulse output counts it: each whole Wh goes to the total register, to the
register of the rate in force and to the open interval at the same moment; the fraction of a Wh waits for the
next step. So the rate registers always add up to the total, and the closed intervals add up exactly to the
increase of the total over the same span (apart from the energy of the still open interval).

Time is float epoch seconds inside, and `step` accepts it directly, because it runs millions of times.

The load limiter (DLMS "limiter", threshold 0-0:17.0.0): with a limit set, import power that stays above it for
`load_limit_trip_after_s` of measuring opens the relay (LOAD_LIMIT_EXCEEDED), and the relay closes again by
itself `load_limit_reclose_after_s` later (LOAD_LIMIT_RECLOSED), as prepaid meters commonly do; None keeps it
open until a remote connect. A remote disconnect takes over a limiter-opened relay: it then stays open. The
limit, like the latching relay, survives a power cut; the time already spent above it does not.

Tamper detection (`device.tamper`) watches every step's sample: current mismatch, neutral missing, reverse
current and a strong magnetic field each log a start and an end event once they have held for their
persistence time, and change how energy is registered while they are present. The meter and terminal cover
switches are battery-backed: opened or closed while the meter has no supply, the event is logged when power
returns, stamped with the time it happened. Event numbers follow the meter's code set (`device.event_codes`).
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from openami.common import obis
from openami.common.clock import ensure_aware
from openami.common.errors import OpenAMIError
from openami.device.clock import DriftingClock
from openami.device.config import MeterConfig, is_int, is_number
from openami.device.event_codes import EventCodeSet, event_number
from openami.device.events import Event, EventCode, EventLog
from openami.device.metrology import SECONDS_PER_HOUR, Sample, active_power_w
from openami.device.profile import LoadProfileMemory, MemoryFault, ProfileEntry, Status
from openami.device.registers import RegisterBank, tariff_rate_window
from openami.device.relay import Relay
from openami.device.tamper import (
    CONDITION_EVENTS,
    COVER_EVENTS,
    Cover,
    TamperCondition,
    TamperConfig,
    TamperDetector,
    Transition,
)
from openami.device.tokens import TokenConfig, TokenRegister, TokenResult

MAX_STEP_S = 366 * 86_400.0
MAX_LOAD_LIMIT_W = 1_000_000  # as the wire format's (headend.codec); the device imports no transport
_MAX_EPOCH_S = 7_258_118_400.0  # 2200-01-01: far enough for any meter, near enough that dates never overflow
_PULSE_EPSILON_WH = 1e-9  # a whole Wh split across segments may add up to 0.999999999... in floating point

Instant = datetime | float  # an aware datetime, or UTC epoch seconds


class PoweredDownError(OpenAMIError):
    """The meter has no supply, so it cannot carry out a command (a real one would not even answer)."""


def _epoch_s(value: Instant, name: str) -> float:
    if isinstance(value, datetime):
        return ensure_aware(value, name).timestamp()
    if not is_number(value):
        raise ValueError(f"{name} must be an aware datetime or finite epoch seconds, got {value!r}")
    return float(value)


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


class Meter:
    """One electricity meter. See the module docstring for how time and energy are kept."""

    __slots__ = (
        "_calendar", "_corruptions", "_covers_open", "_event_codes", "_events", "_export_residue_wh", "_export_wh", "_import_residue_wh",
        "_import_wh", "_interval_end_s", "_interval_export_wh", "_interval_import_wh", "_interval_s",
        "_interval_start_s", "_interval_status", "_latched", "_limit_reclose_after_s", "_limit_reclose_s",
        "_limit_trip_after_s", "_limit_w", "_memory", "_over_limit_s", "_over_since_s", "_phases", "_powered",
        "_pushed", "_rate", "_rate_until_s", "_registers", "_relay", "_relay_closed", "_rtc", "_sample", "_seed",
        "_tamper", "_tokens", "_true_last_s", "_zone", "config",
    )  # fmt: skip

    def __init__(
        self,
        config: MeterConfig,
        commissioned_at: datetime,
        seed: int = 0,
        *,
        initial_import_wh: int = 0,
        initial_export_wh: int = 0,
        load_limit_trip_after_s: float = 30.0,
        load_limit_reclose_after_s: float | None = 60.0,
        tamper: TamperConfig | None = None,
        event_codes: EventCodeSet = EventCodeSet.IDIS,
    ) -> None:
        """A meter installed at `commissioned_at` (aware), its clock set right then. Registers start at the
        initial values (Wh), booked to the rate in force at commissioning. `seed` drives the meter's own
        random choices (which entry fault injection corrupts), so equal seeds and inputs give equal meters.
        The load limiter's timing (seconds of measuring, see the module docstring) is fixed at manufacture;
        its limit starts at 0 (none) and is set by `set_load_limit`. `tamper` holds the tamper detection's
        thresholds (None: the defaults of `TamperConfig`) and `event_codes` the code set its events are
        numbered in, both fixed at manufacture like the limiter's timing."""
        if not isinstance(config, MeterConfig):
            raise TypeError(f"config must be a MeterConfig, got {type(config).__name__}")
        start_s = ensure_aware(commissioned_at, "commissioned_at").timestamp()
        for name, value in (
            ("initial_import_wh", initial_import_wh),
            ("initial_export_wh", initial_export_wh),
        ):
            if not is_int(value) or value < 0:
                raise ValueError(f"{name} must be a whole number of Wh, not negative, got {value!r}")
        if not is_number(load_limit_trip_after_s) or load_limit_trip_after_s <= 0:
            raise ValueError(f"load_limit_trip_after_s must be above 0 s, got {load_limit_trip_after_s!r}")
        if load_limit_reclose_after_s is not None and (
            not is_number(load_limit_reclose_after_s) or load_limit_reclose_after_s < 0
        ):
            raise ValueError(
                f"load_limit_reclose_after_s must be 0 s or more (None: stay open), got "
                f"{load_limit_reclose_after_s!r}"
            )
        if tamper is not None and not isinstance(tamper, TamperConfig):
            raise TypeError(f"tamper must be a TamperConfig or None, got {type(tamper).__name__}")
        try:
            self._event_codes = EventCodeSet(event_codes)
        except ValueError:
            raise ValueError(
                f"event_codes must be one of {[s.value for s in EventCodeSet]}, got {event_codes!r}"
            ) from None
        self.config = config
        self._seed = seed
        self._zone = ZoneInfo(config.timezone)
        self._calendar = config.calendar
        self._phases = float(config.phases)
        self._rtc = DriftingClock(start_s, start_s, config.clock_drift_ppm)
        self._registers = RegisterBank()
        self._import_wh = self._registers.import_wh
        self._export_wh = self._registers.export_wh
        self._import_residue_wh = 0.0
        self._export_residue_wh = 0.0
        self._memory = LoadProfileMemory(config.profile_capacity)
        self._events = EventLog(config.event_log_capacity)
        self._relay = Relay()
        self._relay_closed = True  # mirrors the relay's state, because every step reads it
        self._powered = True
        self._true_last_s = start_s
        self._interval_s = config.load_profile_interval_s
        self._interval_start_s = math.floor(start_s / self._interval_s) * self._interval_s
        self._interval_end_s = float(self._interval_start_s + self._interval_s)
        self._interval_import_wh = 0
        self._interval_export_wh = 0
        self._interval_status = 0
        self._rate, self._rate_until_s = tariff_rate_window(self._calendar, self._zone, start_s)
        self._sample: Sample | None = None
        self._pushed = 0
        self._corruptions = 0
        self._tokens: TokenRegister | None = None  # set by provision_tokens: a prepaid keypad meter
        self._limit_w = 0  # the load limit in force, W of import; 0: none
        self._limit_trip_after_s = float(load_limit_trip_after_s)
        self._limit_reclose_after_s = load_limit_reclose_after_s
        self._over_limit_s = 0.0  # how long import power has stayed above the limit, true seconds measured
        self._over_since_s = 0.0  # true instant it went above, while _over_limit_s > 0
        self._limit_reclose_s: float | None = None  # while the limiter holds the relay open: when it recloses
        self._tamper = TamperDetector(tamper or TamperConfig(), config.nominal_voltage_v)
        self._covers_open: set[Cover] = set()
        self._latched: list[tuple[EventCode, float]] = []  # cover switches seen without supply: code, meter s
        self._registers.add(self._rate, initial_import_wh)
        self._registers.add(self._rate, initial_export_wh, export=True)

    @property
    def serial(self) -> str:
        return self.config.serial

    @property
    def relay_connected(self) -> bool:
        return self._relay_closed

    @property
    def powered(self) -> bool:
        return self._powered

    @property
    def load_limit_w(self) -> int:
        """The load limit in force, W of import power (OBIS 0-0:17.0.0); 0 when there is none."""
        return self._limit_w

    @property
    def load_limit_tripped(self) -> bool:
        """True while the load limiter (not a remote disconnection) holds the relay open."""
        return self._limit_reclose_s is not None

    @property
    def last_event_sequence(self) -> int:
        return self._events.last_sequence

    @property
    def tamper_config(self) -> TamperConfig:
        return self._tamper.config

    @property
    def active_tampers(self) -> frozenset[TamperCondition]:
        """Tamper conditions whose start is logged and whose end is not yet."""
        return self._tamper.active

    @property
    def open_covers(self) -> frozenset[Cover]:
        return frozenset(self._covers_open)

    @property
    def event_code_set(self) -> EventCodeSet:
        return self._event_codes

    def event_number(self, event: Event) -> int:
        """The number `event` carries on the wire in this meter's code set (IDIS or IS 15959)."""
        return event_number(event.code, self._event_codes)

    # --- offline tokens (device.tokens) ------------------------------------------------------------------

    def provision_tokens(self, config: TokenConfig) -> None:
        """Make this a token meter: key, starting code and credit unit from the platform; credit starts at 0."""
        if self._tokens is not None:
            raise ValueError(f"meter {self.serial} is already provisioned for offline tokens")
        self._tokens = TokenRegister(config)

    @property
    def tokens(self) -> TokenRegister | None:
        """The token state and prepaid register (credit, token log), or None for a meter without a keypad."""
        return self._tokens

    def enter_token(self, true_now: Instant, token: str) -> TokenResult:
        """Type `token` on the keypad at true instant `true_now`; stamped by the meter's clock."""
        if self._tokens is None:
            raise ValueError(f"meter {self.serial} is not provisioned for offline tokens")
        meter_s = self._command(true_now, needs_power=True)
        return self._tokens.enter(token, datetime.fromtimestamp(meter_s, UTC))

    # --- measuring ---------------------------------------------------------------------------------------

    def step(self, true_now: Instant, duration_s: float, sample: Sample) -> None:
        """Measure `sample` during true `[true_now, true_now + duration_s)`; see the module docstring."""
        t0 = true_now if type(true_now) is float else _epoch_s(true_now, "true_now")
        if not self._true_last_s <= t0 <= _MAX_EPOCH_S:
            raise self._not_forward(t0, "true_now")
        if not 0.0 <= duration_s <= MAX_STEP_S:
            raise ValueError(
                f"meter {self.serial}: duration_s must be 0..{MAX_STEP_S:g} s, got {duration_s!r}"
            )
        self._true_last_s = t0 + duration_s
        if not self._powered:
            return
        tamper = self._tamper
        if tamper.is_plain(sample, flowing=self._relay_closed):
            self._measure_limited_or_not(t0, duration_s, sample, None)
            return
        end = t0 + duration_s
        phases = int(self._phases)
        while True:  # cut the step where a tamper condition starts or ends
            registration = tamper.registered_power_w(sample, phases)
            transition = tamper.advance(t0, end - t0, sample, flowing=self._relay_closed)
            if transition is None:
                self._measure_limited_or_not(t0, end - t0, sample, registration)
                return
            self._measure_limited_or_not(t0, transition.true_s - t0, sample, registration)
            t0 = transition.true_s
            self._log_transition(transition)

    def _measure_limited_or_not(
        self, t0: float, duration_s: float, sample: Sample, registration: tuple[float, bool] | None
    ) -> None:
        if self._limit_w:
            self._step_limited(t0, duration_s, sample, registration)
        else:
            self._measure(t0, duration_s, sample, registration)

    def _measure(
        self, t0: float, duration_s: float, sample: Sample, registration: tuple[float, bool] | None = None
    ) -> None:
        """Count what `sample` delivers during true `[t0, t0 + duration_s)` through the relay as it stands.
        `registration` (power W, export) replaces the measured power while a tamper condition is present."""
        rtc = self._rtc
        m0 = rtc.base_meter_s + (t0 - rtc.base_true_s) * rtc.rate
        m1 = m0 + duration_s * rtc.rate
        self._sample = sample
        export = sample.export
        if self._relay_closed:
            if registration is None:
                power_w = sample.voltage_v * sample.phase_current_a * sample.power_factor * self._phases
            else:
                power_w, export = registration
            energy_wh = power_w * duration_s / SECONDS_PER_HOUR
        else:
            energy_wh = 0.0
        if m1 < self._interval_end_s and m1 <= self._rate_until_s:
            if energy_wh > 0.0:
                self._count(energy_wh, export)
            return
        self._count_across_boundaries(m0, m1, energy_wh, export)

    def _log_transition(self, transition: Transition) -> None:
        start_code, end_code = CONDITION_EVENTS[transition.condition]
        rtc = self._rtc
        self._log(
            start_code if transition.started else end_code,
            rtc.meter_s(transition.true_s),
            f"{'present' if transition.started else 'absent'} since={_iso(rtc.meter_s(transition.since_s))}",
        )

    def _step_limited(
        self, t: float, duration_s: float, sample: Sample, registration: tuple[float, bool] | None = None
    ) -> None:
        """`step` with a load limit set: measure in pieces, tripping where import power has been above the
        limit for the trip time and closing again where the limiter's wait ends, both inside the step."""
        end = t + duration_s
        power_w = 0.0 if sample.export else active_power_w(sample, int(self._phases))
        while True:
            reclose_s = self._limit_reclose_s
            if reclose_s is not None:  # held open by the limiter (math.inf: until a remote connect)
                if reclose_s > end:
                    self._measure(t, end - t, sample, registration)
                    return
                if reclose_s > t:
                    self._measure(t, reclose_s - t, sample, registration)
                    t = reclose_s
                self._limiter_close(t, "the limiter's wait is over")
                continue
            if not self._relay_closed or power_w <= self._limit_w:
                self._over_limit_s = 0.0
                self._measure(t, end - t, sample, registration)
                return
            if self._over_limit_s == 0.0:
                self._over_since_s = t
            need_s = max(0.0, self._limit_trip_after_s - self._over_limit_s)
            if need_s > end - t:
                self._over_limit_s += end - t
                self._measure(t, end - t, sample, registration)
                return
            if need_s > 0.0:
                self._measure(t, need_s, sample, registration)
                t += need_s
            self._limiter_trip(t, power_w)

    def _limiter_trip(self, true_s: float, power_w: float) -> None:
        meter_s = self._rtc.meter_s(true_s)
        self._close_intervals_until(meter_s)
        self._relay.disconnect()
        self._relay_closed = False
        self._interval_status |= Status.RELAY_OPEN
        after = self._limit_reclose_after_s
        self._limit_reclose_s = math.inf if after is None else true_s + after
        self._over_limit_s = 0.0
        self._log(
            EventCode.LOAD_LIMIT_EXCEEDED,
            meter_s,
            f"limit={self._limit_w}W import={power_w:.0f}W "
            f"since={_iso(self._rtc.meter_s(self._over_since_s))}: relay opened",
        )

    def _limiter_close(self, true_s: float, why: str) -> None:
        meter_s = self._rtc.meter_s(true_s)
        self._close_intervals_until(meter_s)
        self._limit_reclose_s = None
        self._over_limit_s = 0.0
        self._relay.connect()
        self._relay_closed = True
        if meter_s <= self._interval_start_s:
            self._interval_status &= ~Status.RELAY_OPEN
        self._log(EventCode.LOAD_LIMIT_RECLOSED, meter_s, f"{why}: relay closed")

    def _count(self, energy_wh: float, export: bool) -> None:
        """The pulse output: whole Wh go to the total, the rate in force and the open interval together."""
        if export:
            residue = self._export_residue_wh + energy_wh
            whole = int(residue + _PULSE_EPSILON_WH)
            self._export_residue_wh = residue - whole
            if whole:
                registers = self._export_wh
                registers[0] += whole
                registers[self._rate] += whole
                self._interval_export_wh += whole
        else:
            residue = self._import_residue_wh + energy_wh
            whole = int(residue + _PULSE_EPSILON_WH)
            self._import_residue_wh = residue - whole
            if whole:
                registers = self._import_wh
                registers[0] += whole
                registers[self._rate] += whole
                self._interval_import_wh += whole

    def _count_across_boundaries(self, m0: float, m1: float, energy_wh: float, export: bool) -> None:
        """Spread `energy_wh` evenly over meter time `[m0, m1)`, cut at interval ends and rate switches."""
        span = m1 - m0
        m = m0
        left_wh = energy_wh
        while True:
            if m >= self._interval_end_s:
                self._close_intervals_until(m)
            if m >= self._rate_until_s:
                self._rate, self._rate_until_s = tariff_rate_window(self._calendar, self._zone, m)
            end = min(m1, self._interval_end_s, self._rate_until_s)
            if end >= m1:
                if left_wh > 0.0:
                    self._count(left_wh, export)
                break
            part_wh = energy_wh * (end - m) / span
            left_wh -= part_wh
            if part_wh > 0.0:
                self._count(part_wh, export)
            m = end
        if m1 >= self._interval_end_s:
            self._close_intervals_until(m1)

    def _close_intervals_until(self, meter_s: float) -> None:
        """Close every interval that ends at or before meter time `meter_s` (several after a gap/outage)."""
        while meter_s >= self._interval_end_s:
            self._store_open_interval()
            self._interval_start_s += self._interval_s
            self._interval_end_s += self._interval_s

    def _store_open_interval(self) -> None:
        self._memory.append(
            self._interval_start_s,
            self._interval_s,
            self._interval_import_wh,
            self._interval_export_wh,
            self._interval_status,
        )
        self._interval_import_wh = 0
        self._interval_export_wh = 0
        # What still holds carries into the next interval.
        self._interval_status = (0 if self._powered else Status.POWER_DOWN) | (
            0 if self._relay_closed else Status.RELAY_OPEN
        )

    # --- supply, relay and clock -------------------------------------------------------------------------

    def power_down(self, true_now: Instant) -> None:
        """The supply fails: nothing is measured until `power_up`; the RTC runs on."""
        if not self._powered:
            raise ValueError(f"meter {self.serial} is already powered down")
        meter_s = self._command(true_now, needs_power=False)
        self._close_intervals_until(meter_s)
        self._powered = False
        self._sample = None
        self._over_limit_s = 0.0  # nothing flows without supply; the limit itself is kept
        self._tamper.power_lost()
        self._interval_status |= Status.POWER_DOWN
        self._log(EventCode.POWER_DOWN, meter_s)

    def power_up(self, true_now: Instant) -> None:
        """The supply returns. Intervals that passed during the outage are closed with 0 Wh and POWER_DOWN, as
        a meter fills its profile after an outage."""
        if self._powered:
            raise ValueError(f"meter {self.serial} is not powered down")
        meter_s = self._command(true_now, needs_power=False)
        self._close_intervals_until(meter_s)
        self._powered = True
        if meter_s <= self._interval_start_s:  # back exactly at a boundary: the new interval was never down
            self._interval_status &= ~Status.POWER_DOWN
        for code, latched_s in self._latched:  # they happened before this power up: logged first
            self._log(code, latched_s, f"latched without supply, logged at power up {_iso(meter_s)}")
        self._latched.clear()
        self._log(EventCode.POWER_UP, meter_s)

    def open_cover(self, true_now: Instant, cover: Cover) -> None:
        """The meter or terminal cover is opened. Its switch is battery-backed: without supply the opening
        is latched with the clock's time and logged when power returns."""
        self._cover_switch(true_now, Cover(cover), opened=True)

    def close_cover(self, true_now: Instant, cover: Cover) -> None:
        """The cover is closed again (latched like an opening while the meter has no supply)."""
        self._cover_switch(true_now, Cover(cover), opened=False)

    def _cover_switch(self, true_now: Instant, cover: Cover, *, opened: bool) -> None:
        if (cover in self._covers_open) == opened:
            state = "open" if opened else "closed"
            raise ValueError(f"meter {self.serial}: the {cover} cover is already {state}")
        meter_s = self._command(true_now, needs_power=False)
        if opened:
            self._covers_open.add(cover)
        else:
            self._covers_open.discard(cover)
        code = COVER_EVENTS[cover][0 if opened else 1]
        if self._powered:
            self._log(code, meter_s)
        else:
            self._latched.append((code, meter_s))

    def disconnect(self, true_now: Instant) -> None:
        """Open the relay (remote disconnection): nothing is measured while open. A relay the load limiter
        holds open becomes remotely open: the limiter no longer closes it."""
        meter_s = self._command(true_now, needs_power=True)
        self._close_intervals_until(meter_s)
        taken_over = self._limit_reclose_s is not None
        self._limit_reclose_s = None
        self._over_limit_s = 0.0
        if self._relay.disconnect():
            self._relay_closed = False
            self._interval_status |= Status.RELAY_OPEN
            self._log(EventCode.RELAY_OPENED, meter_s)
        elif taken_over:
            self._log(
                EventCode.RELAY_OPENED, meter_s, "already open by the load limiter: now held open remotely"
            )

    def connect(self, true_now: Instant) -> None:
        """Close the relay (remote connection), also when the load limiter holds it open."""
        meter_s = self._command(true_now, needs_power=True)
        self._close_intervals_until(meter_s)
        self._limit_reclose_s = None
        self._over_limit_s = 0.0
        if self._relay.connect():
            self._relay_closed = True
            if meter_s <= self._interval_start_s:
                self._interval_status &= ~Status.RELAY_OPEN
            self._log(EventCode.RELAY_CLOSED, meter_s)

    def set_load_limit(self, true_now: Instant, limit_w: int) -> None:
        """Set the load limit to `limit_w` W of import (0: none), counting time above it afresh. Removing the
        limit while the limiter holds the relay open closes it (the limiter lets go)."""
        if not is_int(limit_w) or not 0 <= limit_w <= MAX_LOAD_LIMIT_W:
            raise ValueError(
                f"meter {self.serial}: load limit must be a whole number of W in 0..{MAX_LOAD_LIMIT_W}, "
                f"got {limit_w!r}"
            )
        meter_s = self._command(true_now, needs_power=True)
        old_w, self._limit_w = self._limit_w, limit_w
        self._over_limit_s = 0.0
        self._log(EventCode.LOAD_LIMIT_SET, meter_s, f"old={old_w}W new={limit_w}W")
        if limit_w == 0 and self._limit_reclose_s is not None:
            self._limiter_close(self._true_last_s, "the load limit was removed")

    def meter_time(self, true_now: Instant) -> datetime:
        """What the meter's drifting clock shows at true instant `true_now` (aware UTC)."""
        return datetime.fromtimestamp(self._rtc.meter_s(_epoch_s(true_now, "true_now")), UTC)

    def set_clock(self, true_now: Instant, new_meter_time: datetime) -> None:
        """Set the clock to show `new_meter_time` now. The open interval is flagged CLOCK_ADJUSTED.

        Set forward past its end, it closes and the interval holding the new time opens (flagged too);
        intervals jumped over are not recorded, the meter never lived them. Set back, it stays open until the
        clock reaches its end again, so no interval start is ever recorded twice. CLOCK_SET is stamped with
        the old time (as IDIS event 4) and its detail gives both.
        """
        new_s = _epoch_s(ensure_aware(new_meter_time, "new_meter_time"), "new_meter_time")
        if not 0.0 <= new_s <= _MAX_EPOCH_S:
            raise ValueError(
                f"meter {self.serial}: new_meter_time {new_meter_time.isoformat()} is out of range"
            )
        meter_s = self._command(true_now, needs_power=True)
        self._close_intervals_until(meter_s)
        self._rtc.set(self._true_last_s, new_s)
        self._interval_status |= Status.CLOCK_ADJUSTED
        if new_s >= self._interval_end_s:
            self._store_open_interval()
            self._interval_start_s = math.floor(new_s / self._interval_s) * self._interval_s
            self._interval_end_s = float(self._interval_start_s + self._interval_s)
            self._interval_status |= Status.CLOCK_ADJUSTED
        self._rate_until_s = -math.inf  # the local time jumped: look the rate up again
        self._log(EventCode.CLOCK_SET, meter_s, f"old={_iso(meter_s)} new={_iso(new_s)}")

    def _command(self, true_now: Instant, *, needs_power: bool) -> float:
        """Move true time on to `true_now` for a command and return the meter's clock then. A command stamped
        before the end of the last step takes effect at that end: the meter has already measured that far."""
        t = _epoch_s(true_now, "true_now")
        if t > _MAX_EPOCH_S:
            raise self._not_forward(t, "true_now")
        if needs_power and not self._powered:
            raise PoweredDownError(f"meter {self.serial} is powered down and cannot carry out the command")
        self._true_last_s = max(t, self._true_last_s)
        return self._rtc.meter_s(self._true_last_s)

    def _not_forward(self, t: float, name: str) -> ValueError:
        if not math.isfinite(t) or t > _MAX_EPOCH_S:
            return ValueError(
                f"meter {self.serial}: {name} must be finite epoch seconds before 2200, got {t!r}"
            )
        return ValueError(
            f"meter {self.serial}: {name} {_iso(t)} is before the end of what it already measured "
            f"({_iso(self._true_last_s)}); steps must not overlap and true time only moves forward"
        )

    # --- reading -----------------------------------------------------------------------------------------

    def registers(self) -> dict[str, int]:
        """OBIS code -> Wh: import and export totals (x.8.0) and per rate (x.8.1..4)."""
        return self._registers.readings()

    def instantaneous(self) -> dict[str, float]:
        """The last measured values: voltage V, phase and neutral current A, import and export power W, relay
        state 1/0. Currents and power are 0 while the relay is open; everything is 0 while powered down."""
        sample = self._sample
        flowing = sample is not None and self._relay_closed
        power_w = 0.0
        values = {obis.VOLTAGE_L1: 0.0, obis.CURRENT_L1: 0.0, obis.CURRENT_NEUTRAL: 0.0}
        if sample is not None:
            values[obis.VOLTAGE_L1] = float(sample.voltage_v)
            if flowing:
                values[obis.CURRENT_L1] = float(sample.phase_current_a)
                values[obis.CURRENT_NEUTRAL] = float(sample.neutral_current_a)
                power_w = sample.voltage_v * sample.phase_current_a * sample.power_factor * self._phases
        exporting = sample is not None and sample.export
        values[obis.ACTIVE_POWER_IMPORT] = 0.0 if exporting else float(power_w)
        values[obis.ACTIVE_POWER_EXPORT] = float(power_w) if exporting else 0.0
        values[obis.RELAY_STATE] = float(self._relay.output_state)
        return values

    def captured_registers(self) -> dict[str, int]:
        """The import and export totals (1-0:1.8.0, 1-0:2.8.0, Wh) as they stood when the last interval
        closed, as a DLMS load profile captures them with each entry. Unlike `registers()`, which also holds
        what the open interval has counted so far, their increase equals the sum of the intervals closed in
        between."""
        return {
            obis.ACTIVE_IMPORT_TOTAL: self._import_wh[0] - self._interval_import_wh,
            obis.ACTIVE_EXPORT_TOTAL: self._export_wh[0] - self._interval_export_wh,
        }

    def take_new_profile_entries(self) -> list[ProfileEntry]:
        """Entries closed since the last call, oldest first, read back from memory (verified like any read).
        Entries overwritten before they were taken are gone."""
        first = max(self._pushed, self._memory.first_number)
        self._pushed = self._memory.next_number
        return self._read(range(first, self._pushed))

    def read_profile(self, start: datetime, end: datetime) -> list[ProfileEntry]:
        """Entries whose interval_start is in `[start, end)`, re-read from memory: each copy's CRC is
        checked, a bad copy restored from the good one (MEMORY_REPAIRED), an entry with both bad left out
        (MEMORY_LOST)."""
        start_s = ensure_aware(start, "start").timestamp()
        end_s = ensure_aware(end, "end").timestamp()
        if end_s < start_s:
            raise ValueError(f"read_profile: end {end.isoformat()} is before start {start.isoformat()}")
        memory = self._memory
        first = memory.find(start_s)
        last = first
        while last < memory.next_number and memory.start_of(last) < end_s:
            last += 1
        return self._read(range(first, last))

    def verify_memory(self) -> int:
        """Scrub the whole profile memory (same repair as a read); returns how many entries were repaired."""
        memory = self._memory
        repaired = 0
        for number in range(memory.first_number, memory.next_number):
            _, fault = memory.read(number)
            if fault is not None:
                self._report(fault)
                repaired += fault.repaired_copy is not None
        return repaired

    def corrupt_profile(self, copy: int, index: int | None = None, rng_seed: int = 0) -> int:
        """Fault injection: flip bits of one copy (0 or 1) of the entry at `index` (0 = oldest held entry), or
        of a random one. Returns the index corrupted."""
        if copy not in (0, 1):
            raise ValueError(f"corrupt_profile: copy must be 0 or 1, got {copy!r}")
        held = len(self._memory)
        if held == 0:
            raise ValueError(f"meter {self.serial}: no load-profile entry is stored yet to corrupt")
        if index is not None and (not is_int(index) or not 0 <= index < held):
            raise ValueError(
                f"corrupt_profile: index must be 0..{held - 1} (0 = oldest entry held), got {index!r}"
            )
        # Earlier corruptions are counted in, so that repeating a call never flips the same bits back.
        rng = random.Random(f"{self._seed}:{rng_seed}:{self._corruptions}")
        self._corruptions += 1
        if index is None:
            index = rng.randrange(held)
        self._memory.corrupt(copy, self._memory.first_number + index, rng)
        return index

    def events_since(self, sequence: int) -> list[Event]:
        """Events numbered above `sequence`, oldest first."""
        return self._events.since(sequence)

    def _read(self, numbers: range) -> list[ProfileEntry]:
        entries = []
        for number in numbers:
            entry, fault = self._memory.read(number)
            if fault is not None:
                self._report(fault)
            if entry is not None:
                entries.append(entry)
        return entries

    def _report(self, fault: MemoryFault) -> None:
        code = EventCode.MEMORY_LOST if fault.repaired_copy is None else EventCode.MEMORY_REPAIRED
        self._log(code, self._rtc.meter_s(self._true_last_s), fault.describe())

    def _log(self, code: EventCode, meter_s: float, detail: str = "") -> None:
        self._events.record(code, datetime.fromtimestamp(meter_s, UTC), detail)

    def __repr__(self) -> str:
        return f"Meter({self.serial!r}, powered={self._powered}, relay_connected={self._relay_closed})"
