"""A fleet of simulated meters with realistic households on a fast clock, with faults on demand.

`Fleet.build` draws N customer meters (each with its household, key and possibly rooftop PV) under ~N/50
transformers, each transformer with a three-phase check meter measuring what really flows out of it.
`Fleet.run` advances true time in steps, feeds every meter what its household draws, applies the planned
outages, and at every push instant (multiples of `push_every_s` since the epoch) has each reachable meter push
one signed data frame through a `FaultyLink`. `Fleet.handle_command` is the meters' side of the down-link.

Households and front ends are computed one UTC day at a time for all meters at once with numpy; what remains
per step is building the `Sample` and calling `Meter.step`, the floor of the cost. Production code never
imports this package.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from openami.common.clock import ManualClock, ensure_aware
from openami.common.errors import FrameRejected, NotFoundError, ValidationError
from openami.common.obis import LOAD_LIMIT
from openami.device import Meter, MeterConfig, PoweredDownError, Sample
from openami.headend.codec import (
    REPLY,
    Command,
    Frame,
    UplinkContent,
    decode_command,
    encode_uplink,
    parse_load_limit,
    parse_topic,
    parse_utc,
)
from openami.readings.interfaces import InstantValue
from openami.simulator.faults import FaultCounts, FaultPlan, FaultyLink
from openami.simulator.grid import (
    CHECK_METER_POWER_FACTOR,
    Block,
    check_meter_flow_w,
    front_end_currents_a,
    prepare_block,
    site_location,
)
from openami.simulator.households import SECONDS_PER_DAY, Climate, Household
from openami.simulator.layout import (
    PlannedMeter,
    SimulatedMeterSpec,
    SimulatedTransformerSpec,
    draw_layout,
)
from openami.simulator.uplink import profile_intervals, push_content, reply_content

REREAD_ENTRIES_PER_FRAME = 2016  # a week of 5-min intervals keeps a reply well under the 1 MiB frame limit
PUSH_INTERVALS_S = tuple(s for s in range(900, 21_601, 900) if SECONDS_PER_DAY % s == 0)


@dataclass(slots=True)
class FleetStats:
    """What the fleet did, besides the faults (see `FaultCounts`)."""

    frames_pushed: int = 0
    replies_sent: int = 0
    commands_refused: int = 0  # bad MAC, replayed down counter, or addressed to another meter
    commands_missed: int = 0  # arrived while the meter was offline
    memory_repairs: int = 0  # entries the daily scrub restored from the good copy


class _SimulatedMeter:
    """A meter of the fleet and the state the fleet keeps about it."""

    __slots__ = (
        "captures_export", "corrupt_at_s", "household", "last_down_counter", "last_event_sequence", "meter",
        "outages", "scrub_pending", "spec", "up_counter",
    )  # fmt: skip

    def __init__(self, planned: PlannedMeter, start: datetime, timezone: str) -> None:
        spec = planned.spec
        self.spec = spec
        self.household = planned.household
        self.outages = planned.outages
        self.corrupt_at_s = planned.corrupt_at_s
        self.captures_export = spec.role == "check" or spec.pv_kwp > 0
        self.up_counter = 0
        self.last_event_sequence = 0
        self.last_down_counter = 0
        self.scrub_pending = False
        config = MeterConfig(
            serial=spec.serial,
            phases=spec.phases,
            rated_current_a=spec.rated_current_a,
            load_profile_interval_s=spec.load_profile_interval_s,
            # Two months at any interval length, as the profile memory of a real meter is sized.
            profile_capacity=max(96 * 62, 62 * SECONDS_PER_DAY // spec.load_profile_interval_s),
            clock_drift_ppm=spec.clock_drift_ppm,
            timezone=timezone,
        )
        self.meter = Meter(config, start, seed=planned.meter_seed)

    def offline(self, t: float) -> bool:
        """No supply, or no communication, at true instant `t`."""
        return not self.meter.powered or any(s <= t < e for s, e, _ in self.outages)

    def cut(self, t: float, step_s: int) -> bool:
        """True when a supply outage, rounded out to whole steps, covers the step starting at `t`."""
        return any(power and t + step_s > s and t < e for s, e, power in self.outages)

    def supplied(self, start_s: int, n: int, step_s: int) -> npt.NDArray[np.bool_] | None:
        """Per step from `start_s`: True while the meter has supply; None when no outage touches the steps.
        Outages are rounded out to whole steps."""
        cuts = [(s, e) for s, e, power in self.outages if power and s < start_s + n * step_s and e > start_s]
        if not cuts:
            return None
        t = start_s + step_s * np.arange(n)
        supplied = np.ones(n, dtype=bool)
        for s, e in cuts:
            supplied &= ~((t + step_s > s) & (t < e))
        return supplied


class Fleet:
    """Simulated meters with households, transformers and check meters. Build one with `Fleet.build`."""

    def __init__(
        self,
        *,
        seed: int,
        start: datetime,
        site_code: str,
        timezone: str,
        topic_root: str,
        push_every_s: int,
        climate: Climate,
        plan: FaultPlan,
        customers: list[PlannedMeter],
        checks: list[PlannedMeter],
        transformers: list[SimulatedTransformerSpec],
    ) -> None:
        if push_every_s not in PUSH_INTERVALS_S:
            raise ValueError(
                f"push_every_s must be 900..21600 s in 900 s steps, dividing a day; got {push_every_s!r}"
            )
        self.site_code = site_code
        self.timezone = timezone
        self.topic_root = topic_root
        self.push_every_s = push_every_s
        self.climate = climate
        self.plan = plan
        self.transformers = transformers
        self.stats = FleetStats()
        self._seed = seed
        self._now_s = int(start.timestamp())
        self._zone = ZoneInfo(timezone)
        self._customers = [_SimulatedMeter(p, start, timezone) for p in customers]
        self._checks = [_SimulatedMeter(p, start, timezone) for p in checks]
        self._by_serial = {m.spec.serial: m for m in self._customers + self._checks}
        self._households = [p.household for p in customers if p.household is not None]
        if len(self._households) != len(customers):
            raise ValueError("every customer meter needs a household")
        self._members = [
            [i for i, m in enumerate(customers) if m.spec.transformer_index == t.index] for t in transformers
        ]
        self._outage_starts = sorted(s for m in customers for s, _, _ in m.outages)
        self.fault_counts = FaultCounts(
            drifting_meters=sum(bool(m.spec.clock_drift_ppm) for m in customers + checks)
        )
        self._lock = threading.RLock()  # run() and handle_command() may be called from different threads
        self._link: FaultyLink | None = None
        self._link_target: Callable[[list[Frame]], None] | None = None

    @classmethod
    def build(
        cls,
        n_meters: int,
        seed: int,
        start: datetime,
        site_code: str,
        timezone: str,
        *,
        interval_s: int = 900,
        solar_share: float = 0.2,
        faults: FaultPlan | None = None,
        keys: Mapping[str, bytes] | None = None,
        push_every_s: int = 14_400,
        topic_root: str = "openami/v1",
        latitude_deg: float | None = None,
        longitude_deg: float | None = None,
        meters_per_transformer: int = 50,
    ) -> Fleet:
        """`n_meters` customer meters commissioned at `start` (aware, whole seconds); the same for one `seed`.

        `keys` (serial -> 32-byte key) overrides the keys otherwise derived from the seed. The site's location
        defaults to the principal place of `timezone`. Meters push every `push_every_s` (900 s to 6 h,
        dividing a day) and keep a load profile of `interval_s`.
        """
        start_s = ensure_aware(start, "start").timestamp()
        if start_s != int(start_s):
            raise ValueError(f"start must be a whole second, got {start.isoformat()}")
        lat, lon = site_location(timezone)
        climate = Climate(
            lat if latitude_deg is None else latitude_deg,
            lon if longitude_deg is None else longitude_deg,
            weather_seed=seed,
        )
        plan = faults or FaultPlan()
        layout = draw_layout(
            n_meters=n_meters,
            seed=seed,
            start_s=start_s,
            site_code=site_code,
            climate=climate,
            interval_s=interval_s,
            solar_share=solar_share,
            plan=plan,
            keys=dict(keys or {}),
            meters_per_transformer=meters_per_transformer,
        )
        return cls(
            seed=seed,
            start=start.astimezone(UTC),
            site_code=site_code,
            timezone=timezone,
            topic_root=topic_root,
            push_every_s=push_every_s,
            climate=climate,
            plan=plan,
            customers=layout.customers,
            checks=layout.checks,
            transformers=layout.transformers,
        )

    @property
    def specs(self) -> list[SimulatedMeterSpec]:
        """Every meter: customers first, then check meters."""
        return [m.spec for m in self._customers + self._checks]

    @property
    def now(self) -> datetime:
        """The true time the fleet has reached."""
        return datetime.fromtimestamp(self._now_s, UTC)

    def meter(self, serial: str) -> Meter:
        return self._sim(serial).meter

    def household(self, serial: str) -> Household:
        household = self._sim(serial).household
        if household is None:
            raise NotFoundError(f"{serial} is a check meter: it has no household")
        return household

    def _sim(self, serial: str) -> _SimulatedMeter:
        try:
            return self._by_serial[serial]
        except KeyError:
            raise NotFoundError(f"no simulated meter {serial!r} in this fleet") from None

    # --- running --------------------------------------------------------------------------------------------

    def run(
        self,
        until: datetime,
        link: Callable[[list[Frame]], None],
        step_s: int = 300,
        on_progress: Callable[[datetime], None] | None = None,
        clock: ManualClock | None = None,
    ) -> int:
        """Advance true time to `until` in steps of `step_s`, pushing frames through `link` with the plan's
        faults applied (see `fault_counts`); returns how many genuine frames were pushed.

        `clock`, when given, is set to each push instant before delivery, so a head-end reading it sees frames
        arrive in simulated time. `on_progress` gets the true time after each push period. A later call goes
        on from where this one stopped.
        """
        until_s = ensure_aware(until, "until").timestamp()
        if not isinstance(step_s, int) or step_s < 1 or self.push_every_s % step_s:
            raise ValueError(
                f"step_s must be whole seconds dividing push_every_s={self.push_every_s}, got {step_s!r}"
            )
        if until_s < self._now_s:
            raise ValueError(f"until {until.isoformat()} is before the fleet's time {self.now.isoformat()}")
        if self._now_s % step_s or (until_s - self._now_s) % step_s:
            raise ValueError(
                f"the fleet's time {self.now.isoformat()} and until {until.isoformat()} must both fall on "
                f"multiples of step_s={step_s} s"
            )
        faulty = self._faulty_link(link)
        pushed = 0
        while self._now_s < until_s:
            block_end = min((self._now_s // SECONDS_PER_DAY + 1) * SECONDS_PER_DAY, int(until_s))
            block = self._prepare_block(self._now_s, block_end, step_s)  # touches no meter: no lock
            t = self._now_s
            while t < block_end:
                period_end = min((t // self.push_every_s + 1) * self.push_every_s, block_end)
                with self._lock:
                    self._step_period(block, t, period_end)
                    self._now_s = period_end
                    frames = self._push_all(period_end) if period_end % self.push_every_s == 0 else []
                if frames:
                    if clock is not None:
                        clock.set(datetime.fromtimestamp(period_end, UTC))
                    faulty(frames)
                    pushed += len(frames)
                if on_progress is not None:
                    on_progress(datetime.fromtimestamp(period_end, UTC))
                t = period_end
        faulty.flush()
        return pushed

    def _faulty_link(self, link: Callable[[list[Frame]], None]) -> FaultyLink:
        # One FaultyLink per target, so frames held back and recorded for replay survive between run() calls.
        if self._link is None or self._link_target is not link:
            self._link = FaultyLink(link, self.plan, seed=self._seed, counts=self.fault_counts)
            self._link_target = link
        return self._link

    def _prepare_block(self, start_s: int, end_s: int, step_s: int) -> Block:
        n = (end_s - start_s) // step_s
        return prepare_block(
            seed=self._seed,
            zone=self._zone,
            start_s=start_s,
            n_steps=n,
            step_s=step_s,
            households=self._households,
            phases=[m.spec.phases for m in self._customers],
            transformer_of=[m.spec.transformer_index for m in self._customers],
            supplied=[m.supplied(start_s, n, step_s) for m in self._customers],
            transformer_voltage_v=[t.voltage_v for t in self.transformers],
        )

    def _step_period(self, block: Block, t0: int, t1: int) -> None:
        k0, k1 = (t0 - block.start_s) // block.step_s, (t1 - block.start_s) // block.step_s
        self.fault_counts.outages += sum(t0 <= s < t1 for s in self._outage_starts)
        step_s = float(block.step_s)
        times = block.times
        for sim, samples, supplied in zip(self._customers, block.samples, block.supplied, strict=True):
            meter = sim.meter
            if supplied is None:
                step = meter.step
                for k in range(k0, k1):
                    step(times[k], step_s, samples[k])
                continue
            for k in range(k0, k1):
                if supplied[k]:
                    if not meter.powered:
                        meter.power_up(times[k])
                    meter.step(times[k], step_s, samples[k])
                elif meter.powered:
                    meter.power_down(times[k])
            # Supply back at the end of the period: the meter is up in time for the push.
            if not meter.powered and not sim.cut(t1, block.step_s):
                meter.power_up(float(t1))
        for j, members in enumerate(self._members):
            net_w = block.transformer_net_w[j, k0:k1]
            # A customer whose relay is open draws nothing, whatever the household wanted.
            for i in members:
                if not self._customers[i].meter.relay_connected:
                    net_w = net_w - block.net_w[i, k0:k1]
            flow_w = check_meter_flow_w(net_w, self.transformers[j].loss_share, block.flow_noise[j, k0:k1])
            volts = block.transformer_volts[j, k0:k1]
            phase_a, neutral_a = front_end_currents_a(np.abs(flow_w), volts, CHECK_METER_POWER_FACTOR, 3)
            check = self._checks[j].meter
            for k, v, a, z, exporting in zip(
                range(k0, k1),
                volts.tolist(),
                phase_a.tolist(),
                neutral_a.tolist(),
                (flow_w < 0).tolist(),
                strict=True,
            ):
                check.step(times[k], step_s, Sample(v, a, z, CHECK_METER_POWER_FACTOR, exporting))

    # --- pushing --------------------------------------------------------------------------------------------

    def _push_all(self, t: int) -> list[Frame]:
        frames = []
        for sim in self._customers + self._checks:
            if sim.offline(t):
                self.fault_counts.pushes_missed += 1
                continue
            content = push_content(sim.meter, float(t), sim.last_event_sequence, sim.captures_export)
            if content.events:
                sim.last_event_sequence = content.events[-1].sequence
            frames.append(self._encode(sim, content, kind="data"))
            self._inject_memory_faults(sim, t)
        self.stats.frames_pushed += len(frames)
        return frames

    def _inject_memory_faults(self, sim: _SimulatedMeter, t: int) -> None:
        """Corrupt one copy of an entry when planned (after the push, so it went out intact), and let the
        meter's daily scrub at UTC midnight find it. Only meters with a corruption are scrubbed: on the others
        the scrub would find nothing, and skipping it keeps the run fast."""
        if sim.corrupt_at_s is not None and t >= sim.corrupt_at_s:
            sim.meter.corrupt_profile(copy=int(t // self.push_every_s) % 2, rng_seed=self._seed)
            sim.corrupt_at_s = None
            sim.scrub_pending = True
            self.fault_counts.corrupted_entries += 1
        elif sim.scrub_pending and t % SECONDS_PER_DAY == 0:
            self.stats.memory_repairs += sim.meter.verify_memory()
            sim.scrub_pending = False

    def _encode(self, sim: _SimulatedMeter, content: UplinkContent, kind: str) -> Frame:
        sim.up_counter += 1
        return encode_uplink(
            content,
            key=sim.spec.key,
            counter=sim.up_counter,
            topic_root=self.topic_root,
            site_code=self.site_code,
            kind=kind,
        )

    # --- down-link ------------------------------------------------------------------------------------------

    def handle_command(self, serial: str, command: Frame | Command) -> list[Frame]:
        """Meter `serial` receives `command` (a signed down-link frame, or an already decoded Command) at the
        fleet's current true time; returns its reply frames (none when it is offline or refuses the frame:
        bad MAC, a down counter not above the last accepted, or a topic for another meter)."""
        with self._lock:
            sim = self._sim(serial)
            now_s = float(self._now_s)
            if sim.offline(now_s):
                self.stats.commands_missed += 1
                return []
            if isinstance(command, Frame):
                try:
                    if parse_topic(command.topic).serial != serial:
                        raise FrameRejected(
                            "malformed", f"command topic {command.topic!r} is not for {serial}"
                        )
                    cmd = decode_command(command, sim.spec.key)
                except FrameRejected:
                    self.stats.commands_refused += 1
                    return []
                if command.counter <= sim.last_down_counter:
                    self.stats.commands_refused += 1
                    return []
                sim.last_down_counter = command.counter
            else:
                cmd = command
            return self._execute(sim, cmd, now_s)

    def _execute(self, sim: _SimulatedMeter, cmd: Command, now_s: float) -> list[Frame]:
        meter = sim.meter
        try:
            if cmd.name == "reread":
                entries = meter.read_profile(parse_utc(cmd.args["start"]), parse_utc(cmd.args["end"]))
                chunks = [
                    entries[k : k + REREAD_ENTRIES_PER_FRAME]
                    for k in range(0, len(entries), REREAD_ENTRIES_PER_FRAME)
                ] or [[]]
                contents = [
                    reply_content(meter, now_s, cmd.request_id, profile_intervals(chunk, sim.captures_export))
                    for chunk in chunks
                ]
            elif cmd.name in ("disconnect", "connect"):
                if cmd.name == "disconnect":
                    meter.disconnect(now_s)
                else:
                    meter.connect(now_s)
                contents = [reply_content(meter, now_s, cmd.request_id, [], with_instants=True)]
            elif cmd.name == "set_clock":
                meter.set_clock(now_s, parse_utc(cmd.args["time"]))
                contents = [reply_content(meter, now_s, cmd.request_id, [])]
            elif cmd.name == "set_load_limit":
                meter.set_load_limit(now_s, parse_load_limit(cmd.args["limit_w"]))
                # The reply carries the limit now in force (what confirms the command) and the relay state.
                reply = reply_content(meter, now_s, cmd.request_id, [], with_instants=True)
                reply.instants.append(InstantValue(LOAD_LIMIT, reply.meter_time, float(meter.load_limit_w)))
                contents = [reply]
            else:
                raise ValidationError(
                    f"meter {sim.spec.serial} does not know command {cmd.name!r}", "command"
                )
        except (KeyError, ValueError) as exc:
            raise ValidationError(f"command {cmd.name} to {sim.spec.serial}: {exc}", "command") from None
        except PoweredDownError:
            self.stats.commands_missed += 1
            return []
        frames = [self._encode(sim, content, kind=REPLY) for content in contents]
        self.stats.replies_sent += len(frames)
        return frames
