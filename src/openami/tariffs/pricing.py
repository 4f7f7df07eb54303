"""The pricing core: a load and a tariff in, bills of explained lines out. Pure (no session, no clock, no I/O).

Energy is integer milli-watt-hours (mWh) in numpy arrays, so sums are exact; each line's amount is computed in
Decimal and rounded once, to the currency's minor unit (half up). A bill period is a span of local days; when a
tariff version changes inside it, the period is priced in segments and the per-month quantities (fixed and minimum
charges, monthly tier bounds) are prorated by days.

Component rules (docs/tariffs.md):
- energy: the price of each interval's season/period, in tiers allocated pro rata (the month's tier shares applied
  to every period, as NREL SAM does) or chronologically (tiers fill in time order; yearly tiers always do);
- export: net billing credits every exported kWh at the export price; net metering nets import and export per
  season/period over the bill period first and credits a surplus at the export price;
- demand: the highest mean power over clock-aligned windows, flat and per season/period;
- fixed: per month (prorated by days) and per day; dynamic: a price per interval from a series;
- minimum: what the other lines (before tax) fall short of the monthly minimum;
- taxes: a rate on the lines of the components named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from openami.common.errors import ValidationError
from openami.tariffs.calendar import LocalTimes, day_types, local_times
from openami.tariffs.model import (
    Component,
    DayType,
    ExportMode,
    HolidayRule,
    Tariff,
    TariffVersion,
    TierAllocation,
    TierBasis,
)

MWH_PER_KWH = 1_000_000
PRICE_SCALE = 1_000_000  # dynamic prices as integer micro-currency per kWh
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class Load:
    """Intervals of one meter: UTC start (s), energy imported and exported (mWh, >= 0), all of one length."""

    start_s: NDArray[np.int64]
    import_mwh: NDArray[np.int64]
    interval_s: int
    export_mwh: NDArray[np.int64] | None = None
    price_micro: NDArray[np.int64] | None = None  # dynamic price per kWh of each interval, in millionths

    def __post_init__(self) -> None:
        n = len(self.start_s)
        for name in ("import_mwh", "export_mwh", "price_micro"):
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise ValidationError(f"{len(values)} values for {n} intervals", f"load.{name}")
        if n and bool(np.any(np.diff(self.start_s) <= 0)):
            raise ValidationError("interval starts must increase", "load.start_s")
        if bool(np.any(self.import_mwh < 0)) or (
            self.export_mwh is not None and bool(np.any(self.export_mwh < 0))
        ):
            raise ValidationError("energy cannot be negative (export has its own column)", "load")


@dataclass(frozen=True)
class Line:
    """One explained charge: what, when, which tier, how much, at what price, for how much (rounded)."""

    component: Component
    description: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal
    period: str | None = None  # "season/period"
    tier: int | None = None  # 1-based


@dataclass
class Bill:
    start: date  # first local day
    end: date  # the day after the last
    import_kwh: Decimal = Decimal(0)
    export_kwh: Decimal = Decimal(0)
    lines: list[Line] = field(default_factory=list)

    def total(self, *components: Component) -> Decimal:
        wanted = set(components) or set(Component)
        return sum((line.amount for line in self.lines if line.component in wanted), Decimal(0))


def _money(value: Decimal, digits: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)


def _kwh(mwh: int | np.integer) -> Decimal:
    return Decimal(int(mwh)) / MWH_PER_KWH


class _Schedule:
    """Period index of every (local day, minute), for one version: season by day, day type by day, slot by minute."""

    def __init__(self, version: TariffVersion) -> None:
        self.keys = [version.key(s.name, p) for s in version.seasons for p in version.periods]
        index = {key: i for i, key in enumerate(self.keys)}
        self.season_names = [s.name for s in version.seasons]
        self.table = np.zeros((len(version.seasons), len(DayType), 1440), dtype=np.int64)
        for si, season in enumerate(version.seasons):
            for day_type in DayType:
                slots = version.schedules[season.name, day_type]
                for n, (minute, period) in enumerate(slots):
                    until = slots[n + 1][0] if n + 1 < len(slots) else 1440
                    self.table[si, day_type, minute:until] = index[version.key(season.name, period)]
        self.version = version
        # The season of each (month, day), once: 366 lookups instead of one per day of every load.
        self.season_of = {
            (m, d): next(i for i, s in enumerate(version.seasons) if s.contains(m, d))
            for m in range(1, 13)
            for d in range(1, 32)
            if _valid_day(m, d)
        }
        self._last: tuple[LocalTimes, NDArray[np.int64]] | None = None  # held, so `is` cannot mistake it

    def periods(self, times: LocalTimes, types: NDArray[np.int64], dates: list[date]) -> NDArray[np.int64]:
        """The period index of every interval (the last answer is kept: a bill's months share one calendar)."""
        if self._last is not None and self._last[0] is times:
            return self._last[1]
        seasons = np.array([self.season_of[d.month, d.day] for d in dates], dtype=np.int64)
        out = self.table[seasons[times.day_of], types[times.day_of], times.minute]
        self._last = (times, out)
        return out


def _valid_day(month: int, day: int) -> bool:
    return day <= (29 if month == 2 else 30 if month in (4, 6, 9, 11) else 31)


_SCHEDULES: dict[int, tuple[TariffVersion, _Schedule]] = {}


def _schedule(version: TariffVersion) -> _Schedule:
    """The version's compiled schedule, built once per version object."""
    found = _SCHEDULES.get(id(version))
    if found is None or found[0] is not version:
        if len(_SCHEDULES) > 256:
            _SCHEDULES.clear()
        found = _SCHEDULES[id(version)] = (version, _Schedule(version))
    return found[1]


def bill_periods(
    tariff: Tariff,
    load: Load,
    spans: list[tuple[date, date]],
    *,
    year_to_date_mwh: int = 0,
    month_to_date_mwh: int = 0,
    extra_holidays: frozenset[date] = frozenset(),
) -> list[Bill]:
    """Bills for consecutive local-day spans [start, end) of `load`. `year_to_date_mwh` and `month_to_date_mwh`:
    consumption of the year and of the calendar month before the first span (yearly and monthly tiers count from
    the 1st); `extra_holidays`: local dates to price as holidays besides the tariff's country's."""
    times, dates, types = _calendar(load, tariff, extra_holidays)
    day_numbers = times.day
    bills = []
    first = spans[0][0] if spans else date(1970, 1, 1)
    running = _Running(first.year, year_to_date_mwh, (first.year, first.month), month_to_date_mwh)
    for start, end in spans:
        bill = Bill(start, end)
        bill_days = (end - start).days
        segments: list[_Segment] = []
        running.bill_mwh = 0
        whole = slice(
            int(np.searchsorted(day_numbers, (start - _EPOCH).days)),
            int(np.searchsorted(day_numbers, (end - _EPOCH).days)),
        )
        for seg_start, seg_end, version in _segments(tariff, start, end):
            running.enter(seg_start)
            lo = (seg_start - _EPOCH).days
            hi = (seg_end - _EPOCH).days
            # Starts are sorted, so a span of days is a slice of the arrays.
            mask = slice(int(np.searchsorted(day_numbers, lo)), int(np.searchsorted(day_numbers, hi)))
            segment = _Segment(
                version=version,
                days=(seg_end - seg_start).days,
                of_month=Decimal((seg_end - seg_start).days) / Decimal(_month_days(seg_start)),
                of_bill=Decimal((seg_end - seg_start).days) / Decimal(bill_days),
                cycle_months=Decimal(bill_days) / Decimal(_month_days(start)),
                first_line=len(bill.lines),
            )
            _price_segment(bill, tariff, segment, load, times, types, dates, mask, whole, running)
            segment.end_line = len(bill.lines)
            segments.append(segment)
        bill.lines += _minimum_and_taxes(tariff, bill, segments)
        bills.append(bill)
    return bills


@dataclass
class _Running:
    """Consumption so far (mWh) that tiers count from: in the year, in the calendar month, in the bill."""

    year: int
    year_mwh: int
    month: tuple[int, int]
    month_mwh: int
    bill_mwh: int = 0

    def enter(self, day: date) -> None:
        if day.year != self.year:
            self.year, self.year_mwh = day.year, 0
        if (day.year, day.month) != self.month:
            self.month, self.month_mwh = (day.year, day.month), 0

    def add(self, mwh: int) -> None:
        self.year_mwh += mwh
        self.month_mwh += mwh
        self.bill_mwh += mwh

    def before(self, basis: TierBasis) -> int:
        return {
            TierBasis.YEARLY: self.year_mwh,
            TierBasis.MONTHLY: self.month_mwh,
            TierBasis.BILLING_CYCLE: self.bill_mwh,
        }[basis]


@dataclass
class _Segment:
    """A part of a bill with one tariff version, inside one calendar month."""

    version: TariffVersion
    days: int
    of_month: Decimal  # its share of its calendar month: per-month charges
    of_bill: Decimal  # its share of the bill: demand charges
    cycle_months: Decimal  # the bill's length in months of its first month: billing-cycle tier bounds
    first_line: int
    end_line: int = 0


def _calendar(
    load: Load, tariff: Tariff, extra: frozenset[date]
) -> tuple[LocalTimes, list[date], NDArray[np.int64]]:
    """Local times and day types of the load's starts. A load on a regular grid (every meter of a billing run)
    shares them with every other load on the same grid: computed once."""
    starts = load.start_s
    n = len(starts)
    if n > 1 and bool(np.all(np.diff(starts) == load.interval_s)):
        return _grid_calendar(int(starts[0]), n, load.interval_s, tariff.timezone, tariff.holidays, extra)
    times = local_times(starts, tariff.timezone)
    dates = times.dates()
    return times, dates, day_types(dates, tariff.holidays, extra)


@lru_cache(maxsize=16)
def _grid_calendar(
    first_s: int, count: int, step_s: int, zone: str, rule: HolidayRule | None, extra: frozenset[date]
) -> tuple[LocalTimes, list[date], NDArray[np.int64]]:
    times = local_times(first_s + step_s * np.arange(count, dtype=np.int64), zone)
    dates = times.dates()
    return times, dates, day_types(dates, rule, extra)


def _month_days(day: date) -> int:
    following = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    return (following - day.replace(day=1)).days


def _segments(tariff: Tariff, start: date, end: date) -> list[tuple[date, date, TariffVersion]]:
    """[start, end) cut where a calendar month begins and where a tariff version takes over."""
    months = []
    day = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    while day < end:
        months.append(day)
        day = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    changes = [
        v.effective_from for v in tariff.versions if v.effective_from and start < v.effective_from < end
    ]
    cuts = sorted({start, *months, *changes})
    out = []
    for a, b in zip(cuts, [*cuts[1:], end], strict=True):
        version = tariff.version_on(a)
        if version is None:
            raise ValidationError(
                f"no tariff version is in force on {a.isoformat()}", f"tariff {tariff.name!r}"
            )
        out.append((a, b, version))
    return out


def _price_segment(
    bill: Bill,
    tariff: Tariff,
    segment: _Segment,
    load: Load,
    times: LocalTimes,
    types: NDArray[np.int64],
    dates: list[date],
    mask: slice,
    bill_mask: slice,
    running: _Running,
) -> None:
    digits = tariff.rounding_digits
    version = segment.version
    schedule = _schedule(version)
    period = schedule.periods(times, types, dates)[mask]
    imported = load.import_mwh[mask]
    exported = load.export_mwh[mask] if load.export_mwh is not None else np.zeros_like(imported)
    keys = schedule.keys
    by_period_import = _sum_by(period, imported, len(keys))
    by_period_export = _sum_by(period, exported, len(keys))
    bill.import_kwh += _kwh(int(imported.sum()))
    bill.export_kwh += _kwh(int(exported.sum()))
    export = version.export
    charged = by_period_import
    if export is not None and export.mode is ExportMode.NET_METERING:
        net = by_period_import - by_period_export
        charged = np.maximum(net, 0)
        surplus = int(np.maximum(-net, 0).sum())
        if surplus:
            credit = -export.price_per_kwh
            _line(bill, Component.EXPORT, "net-metering surplus credit", _kwh(surplus), "kWh", credit, digits)
    bill.lines += _energy_lines(version, keys, charged, period, imported, segment, running, digits)
    if export is not None and export.mode is ExportMode.NET_BILLING and int(exported.sum()):
        credit = -export.price_per_kwh
        _line(bill, Component.EXPORT, "export credit", _kwh(int(exported.sum())), "kWh", credit, digits)
    running.add(int(charged.sum()) if charged is not by_period_import else int(imported.sum()))
    if version.dynamic_prices:
        if load.price_micro is None:
            raise ValidationError(
                "this tariff takes a price series for its dynamic prices; none was given", "prices"
            )
        total = int(np.dot(imported, load.price_micro[mask]))
        amount = Decimal(total) / (MWH_PER_KWH * PRICE_SCALE)
        quantity = _kwh(int(imported.sum()))
        unit_price = amount / quantity if quantity else Decimal(0)
        bill.lines.append(Line(Component.DYNAMIC, "energy at dynamic prices", quantity, "kWh",
                               _money(unit_price, 6), _money(amount, digits)))  # fmt: skip
    if version.fixed_per_month:
        what = "fixed charge per month"
        _line(bill, Component.FIXED, what, segment.of_month, "month", version.fixed_per_month, digits)
    if version.fixed_per_day:
        what = "fixed charge per day"
        _line(bill, Component.FIXED, what, Decimal(segment.days), "day", version.fixed_per_day, digits)
    if version.demand is not None:
        bill.lines += _demand_lines(version, keys, load, mask, period, segment, bill_mask, digits)


# Sums through float64 are exact below 2**53 mWh (9 GWh): far beyond one meter's bill period.
_EXACT_FLOAT_SUM = 2**53


def _sum_by(index: NDArray[np.int64], values: NDArray[np.int64], size: int) -> NDArray[np.int64]:
    """`values` summed by `index` (0..size-1), exactly."""
    if len(values) and int(np.abs(values).sum()) < _EXACT_FLOAT_SUM:
        return np.bincount(index, weights=values, minlength=size).astype(np.int64)
    out = np.zeros(size, dtype=np.int64)
    np.add.at(out, index, values)
    return out


def _line(
    bill: Bill, component: Component, what: str, quantity: Decimal, unit: str, price: Decimal, digits: int
) -> None:
    bill.lines.append(Line(component, what, quantity, unit, price, _money(quantity * price, digits)))


def _energy_lines(
    version: TariffVersion,
    keys: list[str],
    by_period: NDArray[np.int64],
    period: NDArray[np.int64],
    imported: NDArray[np.int64],
    segment: _Segment,
    running: _Running,
    digits: int,
) -> list[Line]:
    tiers = version.tiers
    lines = []
    if tiers is None:
        for i, key in enumerate(keys):
            if by_period[i]:
                price = version.energy_prices[key][0]
                quantity = _kwh(int(by_period[i]))
                lines.append(
                    Line(
                        Component.ENERGY,
                        f"energy {key}",
                        quantity,
                        "kWh",
                        price,
                        _money(quantity * price, digits),
                        key,
                    )
                )
        return lines
    # Monthly and yearly bounds count from the 1st of the month or year (across bills); a billing cycle's are
    # the month's bounds scaled to the cycle's length.
    scale = segment.cycle_months if tiers.basis is TierBasis.BILLING_CYCLE else Decimal(1)
    bounds = [int((b * scale * MWH_PER_KWH).to_integral_value()) for b in tiers.bounds_kwh]
    edges = [0, *bounds]
    start = running.before(tiers.basis)
    if tiers.allocation is TierAllocation.PRO_RATA:
        total = int(by_period.sum())
        top = start + total
        shares = [
            max(0, min(top, hi) - max(start, lo)) if hi is not None else max(0, top - max(start, lo))
            for lo, hi in zip(edges, [*bounds, None], strict=True)
        ]
        for i, key in enumerate(keys):
            if not by_period[i]:
                continue
            for t, share in enumerate(shares):
                if not share:
                    continue
                quantity = Decimal(int(by_period[i])) * Decimal(share) / Decimal(total) / MWH_PER_KWH
                price = version.energy_prices[key][t]
                lines.append(Line(Component.ENERGY, f"energy {key}, tier {t + 1}", quantity.quantize(Decimal("0.000001")),
                                  "kWh", price, _money(quantity * price, digits), key, t + 1))  # fmt: skip
        return lines
    # Chronological: each interval's energy fills the tiers from the running total before it.
    after = start + np.cumsum(imported)
    before = after - imported
    for t, (lo, hi) in enumerate(zip(edges, [*bounds, None], strict=True)):
        top = np.iinfo(np.int64).max if hi is None else hi
        portion = np.clip(after, lo, top) - np.clip(before, lo, top)
        per_period = _sum_by(period, portion, len(keys))
        for i, key in enumerate(keys):
            if per_period[i]:
                quantity = _kwh(int(per_period[i]))
                price = version.energy_prices[key][t]
                lines.append(Line(Component.ENERGY, f"energy {key}, tier {t + 1}", quantity, "kWh", price,
                                  _money(quantity * price, digits), key, t + 1))  # fmt: skip
    return lines


def _demand_lines(
    version: TariffVersion,
    keys: list[str],
    load: Load,
    mask: slice,
    period: NDArray[np.int64],
    segment: _Segment,
    bill_mask: slice,
    digits: int,
) -> list[Line]:
    """Demand lines of a segment, charged at the segment's prices for its share of the bill's days: the flat
    charge on the whole bill's highest window, a period's charge on the segment's highest window in it."""
    demand = version.demand
    assert demand is not None  # noqa: S101  (checked by the caller)
    window_s = demand.window_minutes * 60
    if mask.start == mask.stop:
        return []
    power_w, first_of_window = _window_power(load, mask, window_s)
    window_period = period[first_of_window]  # a window's period is its first interval's
    lines = []
    share = segment.of_bill
    prorated = f", {segment.days} of the bill's days" if share != 1 else ""
    if demand.flat_price_per_kw:
        # The bill's highest window, whichever part of the bill it fell in.
        peak_kw = _kw(_window_power(load, bill_mask, window_s)[0])
        price = demand.flat_price_per_kw * share
        lines.append(Line(Component.DEMAND, f"demand, highest {demand.window_minutes}-min mean{prorated}", peak_kw,
                          "kW", price, _money(peak_kw * price, digits)))  # fmt: skip
    for key, key_price in sorted(demand.price_per_kw.items()):
        i = keys.index(key)
        chosen = power_w[window_period == i]
        if not len(chosen):
            continue
        peak_kw = _kw(chosen)
        price = key_price * share
        lines.append(Line(Component.DEMAND, f"demand {key}, highest {demand.window_minutes}-min mean{prorated}",
                          peak_kw, "kW", price, _money(peak_kw * price, digits), key))  # fmt: skip
    return lines


def _window_power(load: Load, span: slice, window_s: int) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Mean power (W) over each clock-aligned window of `window_s` in `span` of the load, and the index (within
    the span) of each window's first interval. Intervals as long as the window or longer: each one's own mean,
    the best the data can tell."""
    starts, energy = load.start_s[span], load.import_mwh[span]
    if load.interval_s >= window_s:
        return energy / 1000 / (load.interval_s / 3600), np.arange(len(starts), dtype=np.int64)
    _windows, first, inverse = np.unique(starts // window_s, return_index=True, return_inverse=True)
    return np.bincount(inverse, weights=energy) / 1000 / (window_s / 3600), first.astype(np.int64)


def _kw(power_w: NDArray[np.float64]) -> Decimal:
    """The highest of `power_w` in kW, to the watt (0 when there is none)."""
    return Decimal(str(round(float(power_w.max()) / 1000, 3))) if len(power_w) else Decimal(0)


def _minimum_and_taxes(tariff: Tariff, bill: Bill, segments: list[_Segment]) -> list[Line]:
    """The minimum charge's shortfall (the monthly minimum of each part of the bill, prorated by days), then the
    taxes: each part's lines at the rates of the version in force in that part; the shortfall shared by days."""
    digits = tariff.rounding_digits
    lines: list[Line] = []
    minimum = _money(sum((s.version.minimum_per_month * s.of_month for s in segments), Decimal(0)), digits)
    before_tax = bill.total(*(c for c in Component if c is not Component.TAX))
    shortfall = minimum - before_tax if minimum and before_tax < minimum else Decimal(0)
    if shortfall:
        lines.append(
            Line(Component.MINIMUM, "minimum charge: shortfall", Decimal(1), "month", shortfall, shortfall)
        )
    bases: dict[tuple[str, Decimal], Decimal] = {}
    for segment in segments:
        own = bill.lines[segment.first_line : segment.end_line]
        for tax in segment.version.taxes:
            base = sum((line.amount for line in own if line.component in tax.applies_to), Decimal(0))
            if Component.MINIMUM in tax.applies_to:
                base += shortfall * segment.of_bill
            if base:
                key = (tax.name, tax.rate)
                bases[key] = bases.get(key, Decimal(0)) + base
    for (name, rate), exact in bases.items():
        base = _money(exact, digits)
        lines.append(Line(Component.TAX, name, base, tariff.currency, rate, _money(base * rate, digits)))
    return lines


def month_spans(year: int) -> list[tuple[date, date]]:
    """The twelve calendar months of `year` as [first day, first day of the next month)."""
    return [(date(year, m, 1), date(year + (m == 12), m % 12 + 1, 1)) for m in range(1, 13)]
