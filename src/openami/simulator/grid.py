"""The low-voltage grid around a simulated fleet: where the site is, how big its transformers are, what the
meters' front ends measure, and what a transformer's check meter sees.

The electrical functions are pure numpy; they take one value per meter and step, or arrays of them
(meters × steps), and broadcast. `prepare_block` turns a stretch of households' demand into `Sample`s for
every meter at once.
"""

from __future__ import annotations

import gc
import math
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from openami.device import Sample
from openami.simulator.households import SECONDS_PER_DAY, Household

FloatArray = npt.NDArray[np.float64]

NOMINAL_VOLTAGE_V = 230.0
STANDARD_RATINGS_KVA = (25, 50, 100, 160, 200, 250, 315, 400, 500, 630, 800, 1000, 1250, 1600)
AFTER_DIVERSITY_DEMAND_KVA = 2.0  # peak a group of households draws per household, design value
CHECK_METER_POWER_FACTOR = 0.95
THREE_PHASE_NEUTRAL_SHARE = 0.15  # neutral current of an honest three-phase load: its phase imbalance


def site_location(timezone: str) -> tuple[float, float]:
    """(latitude°, longitude°) of the principal place of an IANA time zone, from the system's zone1970.tab.

    Falls back to latitude 45° north and the longitude of the zone's standard offset (15° per hour) when the
    table is not installed or does not list the zone, so a fleet always has somewhere to be.
    """
    try:
        zone = zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timezone {timezone!r} is not a known IANA time zone") from None
    for base in zoneinfo.TZPATH:
        table = Path(base) / "zone1970.tab"
        if table.is_file():
            for line in table.read_text(encoding="utf-8").splitlines():
                fields = line.split("\t")
                if len(fields) >= 3 and fields[2] == timezone:
                    return _iso6709(fields[1])
    # The smaller of January's and July's offsets is the standard one wherever DST adds an hour.
    offsets_s = [
        (datetime(2025, month, 1, tzinfo=UTC).astimezone(zone).utcoffset() or timedelta(0)).total_seconds()
        for month in (1, 7)
    ]
    return 45.0, max(-180.0, min(180.0, min(offsets_s) / 3600 * 15))


def _iso6709(text: str) -> tuple[float, float]:
    """ "+DDMM+DDDMM" or "+DDMMSS+DDDMMSS" as decimal degrees."""
    split = max(text.rfind("+"), text.rfind("-"))
    return _dms(text[:split], 2), _dms(text[split:], 3)


def _dms(text: str, degree_digits: int) -> float:
    sign = -1.0 if text[0] == "-" else 1.0
    digits = text[1:]
    degrees = int(digits[:degree_digits])
    minutes = int(digits[degree_digits : degree_digits + 2])
    seconds = int(digits[degree_digits + 2 :] or 0)
    return sign * (degrees + minutes / 60 + seconds / 3600)


def transformer_rating_kva(n_customers: int) -> int:
    """The smallest standard rating (kVA) carrying the after-diversity demand of `n_customers`, +30 %."""
    needed = n_customers * AFTER_DIVERSITY_DEMAND_KVA * 1.3
    return next((r for r in STANDARD_RATINGS_KVA if r >= needed), STANDARD_RATINGS_KVA[-1])


def check_meter_rated_current_a(rating_kva: int) -> int:
    """Imax of a three-phase check meter (via CTs) on a transformer: full-load current per phase plus 20 %."""
    return math.ceil(rating_kva * 1000 / (3 * NOMINAL_VOLTAGE_V) * 1.2)


def supply_voltage_v(
    transformer_voltage_v: float | FloatArray,
    load_w: FloatArray,
    noise: FloatArray,
    volts_drop_per_kw: float | FloatArray,
) -> FloatArray:
    """The voltage V at a customer's meter: the transformer's, less the drop of the service line under load,
    plus the wander of the grid (`noise`, V)."""
    return np.asarray(transformer_voltage_v - volts_drop_per_kw * load_w / 1000 + noise, dtype=np.float64)


def front_end_currents_a(
    power_w: FloatArray,
    voltage_v: FloatArray,
    power_factor: float | FloatArray,
    phases: int | npt.NDArray[np.int64],
) -> tuple[FloatArray, FloatArray]:
    """(phase current A, neutral current A) that make `power_w` at `voltage_v` and `power_factor`.

    Phase current = P / (V × pf × phases). An honest single-phase customer's neutral carries the phase current
    back; a three-phase load returns only its imbalance.
    """
    phase_a = power_w / (voltage_v * power_factor * phases)
    neutral_a = np.where(np.equal(phases, 1), phase_a, phase_a * THREE_PHASE_NEUTRAL_SHARE)
    return np.asarray(phase_a, dtype=np.float64), np.asarray(neutral_a, dtype=np.float64)


def check_meter_flow_w(net_load_w: FloatArray, loss_share: float, noise_share: FloatArray) -> FloatArray:
    """What flows out of a transformer: its customers' net load W (import - export) plus technical losses.

    Losses add `loss_share` of the flow when customers import; when their PV pushes power back, losses eat
    the same share of it before it reaches the transformer. `noise_share` is the measurement and load wander
    the customer meters do not see (street lights, unmetered small loads), as a share of the flow.
    Positive: import from the transformer; negative: export to it.
    """
    flow = np.where(net_load_w >= 0, net_load_w * (1 + loss_share), net_load_w * (1 - loss_share))
    return np.asarray(flow * (1 + noise_share), dtype=np.float64)


SupplyMask = npt.NDArray[np.bool_]


@dataclass(slots=True)
class Block:
    """A stretch of steps (at most one UTC day) prepared for every meter at once."""

    start_s: int
    step_s: int
    times: list[float]  # true epoch seconds of each step
    samples: list[list[Sample]]  # per customer meter, one per step
    supplied: list[SupplyMask | None]  # per customer meter: True while it has supply; None if never cut
    net_w: FloatArray  # customers × steps: import - export W actually drawn
    transformer_net_w: FloatArray  # transformers × steps
    transformer_volts: FloatArray  # transformers × steps
    flow_noise: FloatArray  # transformers × steps, share of the flow


def prepare_block(
    *,
    seed: int,
    zone: ZoneInfo,
    start_s: int,
    n_steps: int,
    step_s: int,
    households: Sequence[Household],
    phases: Sequence[int],
    transformer_of: Sequence[int],
    supplied: Sequence[SupplyMask | None],
    transformer_voltage_v: Sequence[float],
) -> Block:
    """What every customer meter's front end measures in `n_steps` steps of `step_s` from `start_s` (true
    epoch s), and what flows through each transformer.

    Per customer meter: its household, phases, transformer index and supply mask (True per step while it has
    supply, None when never cut). Per transformer: its no-load voltage V. Noise is drawn for the whole UTC day
    and sliced, so preparing a day in one block or in several gives the same samples.
    """
    n = n_steps
    offsets = utc_offsets_s(zone, start_s, n, step_s)
    import_w = np.empty((len(households), n))
    export_w = np.empty((len(households), n))
    for i, (household, mask) in enumerate(zip(households, supplied, strict=True)):
        import_w[i], export_w[i] = household.mean_power_w(start_s, n, step_s, offsets)
        if mask is not None:
            import_w[i] *= mask
            export_w[i] *= mask
    day_start_s = start_s - start_s % SECONDS_PER_DAY
    first = (start_s - day_start_s) // step_s
    steps = slice(first, first + n)
    n_day = SECONDS_PER_DAY // step_s
    rng = np.random.default_rng([seed, day_start_s // SECONDS_PER_DAY, step_s, 5])
    # The feeder voltage wanders slowly; each service line adds its own drop and ripple.
    n_transformers, n_meters = len(transformer_voltage_v), len(households)
    wander_v = np.cumsum(rng.normal(0, 0.3, (n_transformers, n_day)), axis=1).clip(-4, 4)
    line_noise_v = rng.normal(0, 0.4, (n_meters, n_day))[:, steps]
    flow_noise = rng.normal(0, 0.01, (n_transformers, n_day))[:, steps]
    feeder = np.asarray(transformer_of, dtype=np.int64)
    transformer_volts = np.asarray(transformer_voltage_v, dtype=np.float64)[:, None] + wander_v[:, steps]
    volts = supply_voltage_v(
        transformer_volts[feeder],
        import_w + export_w,
        line_noise_v,
        # Meters farther down the feeder see more drop under load.
        volts_drop_per_kw=(1.0 + (np.arange(n_meters, dtype=np.float64) % 7) * 0.3)[:, None],
    )
    exporting = export_w > import_w
    power_factor = np.array([h.power_factor for h in households])
    phase_a, neutral_a = front_end_currents_a(
        np.where(exporting, export_w, import_w),
        volts,
        power_factor[:, None],
        np.asarray(phases, dtype=np.int64)[:, None],
    )
    net_w = import_w - export_w
    transformer_net_w = np.zeros((n_transformers, n))
    np.add.at(transformer_net_w, feeder, net_w)
    return Block(
        start_s=start_s,
        step_s=step_s,
        times=(start_s + step_s * np.arange(n, dtype=np.float64)).tolist(),
        samples=_samples(volts, phase_a, neutral_a, exporting, power_factor),
        supplied=list(supplied),
        net_w=net_w,
        transformer_net_w=transformer_net_w,
        transformer_volts=transformer_volts,
        flow_noise=flow_noise,
    )


def utc_offsets_s(zone: ZoneInfo, start_s: int, n: int, step_s: int) -> float | FloatArray:
    """The zone's offset from UTC (s) for `n` steps from `start_s`: one value, or one per step around DST."""

    def offset(t: float) -> float:
        delta = datetime.fromtimestamp(t, UTC).astimezone(zone).utcoffset()
        return delta.total_seconds() if delta else 0.0

    first, last = offset(start_s), offset(start_s + (n - 1) * step_s)
    if first == last:
        return first
    return np.array([offset(start_s + k * step_s) for k in range(n)])


def _samples(
    volts: FloatArray,
    phase_a: FloatArray,
    neutral_a: FloatArray,
    exporting: npt.NDArray[np.bool_],
    power_factor: FloatArray,
) -> list[list[Sample]]:
    """One Sample per meter (row) and step (column)."""
    # A day of a big fleet is over 100 000 Samples, none of which can be part of a reference cycle; with the
    # cyclic collector on, their allocation triggers collections that walk every live object, again and again.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return [
            [Sample(v, a, z, pf, e) for v, a, z, e in zip(vs, as_, zs, es, strict=True)]
            for vs, as_, zs, es, pf in zip(
                volts.tolist(),
                phase_a.tolist(),
                neutral_a.tolist(),
                exporting.tolist(),
                power_factor.tolist(),
                strict=True,
            )
        ]
    finally:
        if collecting:
            gc.enable()
