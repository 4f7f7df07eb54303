"""Drawing a fleet's layout from a seed: meters, households, keys, transformers, and which meters the fault
plan hits and when. Everything here is decided once, before time starts; `Fleet` then runs it.

The spec rows (`SimulatedMeterSpec`, `SimulatedTransformerSpec`) are what the demo turns into registry rows.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from openami.headend.codec import IDENTIFIER
from openami.simulator.faults import FaultPlan, Outage
from openami.simulator.grid import (
    NOMINAL_VOLTAGE_V,
    check_meter_rated_current_a,
    transformer_rating_kva,
)
from openami.simulator.households import SECONDS_PER_DAY, Climate, Household

KEY_BYTES = 32
MAX_SERIAL_CHARS = 40
LOAD_PROFILE_INTERVALS_S = (300, 600, 900, 1800, 3600)
# (phases, meter Imax A, service fuse A) of customer connections, and how common each is.
_CONNECTIONS = ((1, 60, 40), (1, 80, 63), (1, 100, 63), (3, 80, 40))
_CONNECTION_WEIGHTS = (0.45, 0.35, 0.12, 0.08)


@dataclass(frozen=True, slots=True)
class SimulatedMeterSpec:
    """One simulated meter as the registry should know it."""

    serial: str
    key: bytes  # 32-byte HMAC key for frame authentication
    role: str  # "customer" or "check" (registry MeterRole values)
    phases: int
    rated_current_a: int  # the meter's Imax
    service_rated_current_a: int  # the service point's fuse; for a check meter, the transformer's full load
    transformer_index: int
    load_profile_interval_s: int
    clock_drift_ppm: float
    household: str  # one-line summary of the household ("" for check meters)
    pv_kwp: float  # rooftop PV behind the meter, kWp (0 without)


@dataclass(frozen=True, slots=True)
class SimulatedTransformerSpec:
    """A distribution transformer, the customer meters it feeds and the check meter on its output."""

    index: int
    code: str
    rating_kva: int
    check_serial: str
    meter_serials: tuple[str, ...]
    loss_share: float  # technical losses as a share of the energy its customers draw (lines, transformer)
    voltage_v: float  # the no-load voltage at its terminals


@dataclass(frozen=True, slots=True)
class PlannedMeter:
    """A meter of the layout with what only the simulator knows about it."""

    spec: SimulatedMeterSpec
    household: Household | None  # None for a check meter
    meter_seed: int
    outages: tuple[tuple[float, float, bool], ...]  # (start s, end s, supply lost), true epoch seconds
    corrupt_at_s: float | None  # when one copy of a profile entry gets corrupted, true epoch seconds


@dataclass(frozen=True, slots=True)
class FleetLayout:
    customers: list[PlannedMeter]
    checks: list[PlannedMeter]  # check meter j sits on transformer j
    transformers: list[SimulatedTransformerSpec]


def draw_layout(
    *,
    n_meters: int,
    seed: int,
    start_s: float,
    site_code: str,
    climate: Climate,
    interval_s: int,
    solar_share: float,
    plan: FaultPlan,
    keys: Mapping[str, bytes],
    meters_per_transformer: int,
) -> FleetLayout:
    """The layout of a fleet, the same for the same arguments. Raises ValueError naming any bad argument."""
    _check_layout_args(n_meters, seed, site_code, interval_s, meters_per_transformer)
    rng = np.random.default_rng([seed, 100])
    n_transformers = math.ceil(n_meters / meters_per_transformer)
    customer_serials = [f"{site_code}-M{i + 1:06d}" for i in range(n_meters)]
    check_serials = [f"{site_code}-T{j + 1:04d}" for j in range(n_transformers)]
    all_serials = customer_serials + check_serials
    if max(len(s) for s in all_serials) > MAX_SERIAL_CHARS:
        raise ValueError(
            f"site_code {site_code!r} is too long: serials would exceed {MAX_SERIAL_CHARS} chars"
        )
    _check_keys(keys, set(all_serials))
    if plan.corrupted_meters > n_meters:
        raise ValueError(f"FaultPlan.corrupted_meters {plan.corrupted_meters} exceeds the {n_meters} meters")

    def key_of(serial: str) -> bytes:
        # Simulated keys only: derived from the seed so that a fleet can be rebuilt with the same keys.
        return keys.get(serial) or hashlib.sha256(f"openami-simulator:{seed}:{serial}".encode()).digest()

    drift_ppm = rng.uniform(-1, 1, len(all_serials)) * plan.clock_drift_ppm_spread
    outages = _outages_by_serial(plan, customer_serials, start_s, rng)
    corrupted = set(rng.choice(n_meters, size=plan.corrupted_meters, replace=False).tolist())
    transformer_of = [i * n_transformers // n_meters for i in range(n_meters)]

    transformers = []
    for j in range(n_transformers):
        members = tuple(s for s, t in zip(customer_serials, transformer_of, strict=True) if t == j)
        transformers.append(
            SimulatedTransformerSpec(
                index=j,
                code=f"{site_code}-TX{j + 1:04d}",
                rating_kva=transformer_rating_kva(len(members)),
                check_serial=check_serials[j],
                meter_serials=members,
                loss_share=float(rng.uniform(0.02, 0.05)),
                voltage_v=float(rng.uniform(230.0, 238.0)),
            )
        )

    customers = []
    for i, serial in enumerate(customer_serials):
        household_seed = _derived_seed(seed, i)
        phases, imax_a, fuse_a = _CONNECTIONS[int(rng.choice(len(_CONNECTIONS), p=_CONNECTION_WEIGHTS))]
        household = Household.draw(
            household_seed, climate, max_power_w=phases * NOMINAL_VOLTAGE_V * fuse_a, solar_share=solar_share
        )
        spec = SimulatedMeterSpec(
            serial=serial,
            key=key_of(serial),
            role="customer",
            phases=phases,
            rated_current_a=imax_a,
            service_rated_current_a=fuse_a,
            transformer_index=transformer_of[i],
            load_profile_interval_s=interval_s,
            clock_drift_ppm=round(float(drift_ppm[i]), 3),
            household=household.summary(),
            pv_kwp=household.pv_kwp,
        )
        corrupt_at_s = start_s + float(rng.uniform(6, 24)) * 3600 if i in corrupted else None
        customers.append(PlannedMeter(spec, household, household_seed, outages.get(serial, ()), corrupt_at_s))

    checks = []
    for j, serial in enumerate(check_serials):
        rating_kva = transformers[j].rating_kva
        spec = SimulatedMeterSpec(
            serial=serial,
            key=key_of(serial),
            role="check",
            phases=3,
            rated_current_a=check_meter_rated_current_a(rating_kva),
            service_rated_current_a=math.ceil(rating_kva * 1000 / (3 * NOMINAL_VOLTAGE_V)),
            transformer_index=j,
            load_profile_interval_s=interval_s,
            clock_drift_ppm=round(float(drift_ppm[n_meters + j]), 3),
            household="",
            pv_kwp=0.0,
        )
        checks.append(PlannedMeter(spec, None, _derived_seed(seed, n_meters + j), (), None))
    return FleetLayout(customers, checks, transformers)


def _derived_seed(seed: int, index: int) -> int:
    """An independent 32-bit seed for meter `index` of the fleet drawn from `seed`."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _check_layout_args(
    n_meters: int, seed: int, site_code: str, interval_s: int, meters_per_transformer: int
) -> None:
    if not isinstance(n_meters, int) or n_meters < 1:
        raise ValueError(f"n_meters must be a positive whole number, got {n_meters!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")
    if not isinstance(site_code, str) or not IDENTIFIER.fullmatch(site_code):
        raise ValueError(f"site_code {site_code!r} must match {IDENTIFIER.pattern}")
    if interval_s not in LOAD_PROFILE_INTERVALS_S:
        raise ValueError(f"interval_s must be one of {LOAD_PROFILE_INTERVALS_S}, got {interval_s!r}")
    if not isinstance(meters_per_transformer, int) or meters_per_transformer < 1:
        raise ValueError(
            f"meters_per_transformer must be a positive whole number, got {meters_per_transformer!r}"
        )


def _check_keys(keys: Mapping[str, bytes], serials: set[str]) -> None:
    unknown = sorted(set(keys) - serials)
    if unknown:
        raise ValueError(f"keys given for serials the fleet does not have: {', '.join(unknown[:5])}")
    for serial, key in keys.items():
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise ValueError(f"the key of {serial} must be {KEY_BYTES} bytes")


def _outages_by_serial(
    plan: FaultPlan, serials: list[str], start_s: float, rng: np.random.Generator
) -> dict[str, tuple[tuple[float, float, bool], ...]]:
    known = set(serials)
    spans: dict[str, list[tuple[float, float, bool]]] = {}

    def add(outage: Outage) -> None:
        if outage.serial not in known:
            raise ValueError(
                f"outage planned for {outage.serial!r}, which is not a customer meter of the fleet"
            )
        begin_s = outage.start.timestamp()
        spans.setdefault(outage.serial, []).append((begin_s, begin_s + outage.hours * 3600, outage.power))

    for outage in plan.outages:
        add(outage)
    for name, count, power in (
        ("random_outages", plan.random_outages, True),
        ("random_comms_outages", plan.random_comms_outages, False),
    ):
        if count > len(serials):
            raise ValueError(f"FaultPlan.{name} {count} exceeds the {len(serials)} customer meters")
        low_h, high_h = plan.random_outage_hours
        for i in rng.choice(len(serials), size=count, replace=False).tolist():
            begin_s = start_s + float(rng.uniform(3600, plan.random_outage_within_days * SECONDS_PER_DAY))
            begin = datetime.fromtimestamp(begin_s - begin_s % 60, UTC)
            add(Outage(serials[i], begin, float(rng.uniform(low_h, high_h)), power))
    return {serial: tuple(sorted(s)) for serial, s in spans.items()}
