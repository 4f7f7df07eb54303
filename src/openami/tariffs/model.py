"""The tariff model: what a tariff says, checked once, as plain immutable values (no I/O, no clock).

A `Tariff` is a list of `TariffVersion`s, each in force from its `effective_from` (a local date) until the next one.
A version prices energy by time-of-use period, season and day type, in consumption tiers; adds fixed, minimum,
demand and export components, dynamic prices from a series, and taxes. Formats (native YAML/JSON, OpenEI URDB)
compile into this model; `pricing` prices loads with it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal


class DayType(enum.IntEnum):
    WEEKDAY = 0
    SATURDAY = 1
    SUNDAY = 2
    HOLIDAY = 3


DAY_TYPE_NAMES = {d: d.name.lower() for d in DayType}


class TierBasis(enum.StrEnum):
    MONTHLY = "monthly"  # consumption of the calendar month (local)
    BILLING_CYCLE = "billing_cycle"  # consumption of the bill's own period
    YEARLY = "yearly"  # consumption since the start of the calendar year (local), chronologically


class TierAllocation(enum.StrEnum):
    PRO_RATA = "pro_rata"  # each period's energy split across tiers in the month's proportions (as NREL SAM)
    CHRONOLOGICAL = "chronological"  # tiers fill in time order: the first kWh of the month in tier 1


class ExportMode(enum.StrEnum):
    NET_METERING = (
        "net_metering"  # export offsets import in the same month and period; a surplus at export price
    )
    NET_BILLING = "net_billing"  # import at retail prices, every exported kWh credited at the export price


class Component(enum.StrEnum):
    ENERGY = "energy"
    FIXED = "fixed"
    MINIMUM = "minimum"
    DEMAND = "demand"
    EXPORT = "export"
    DYNAMIC = "dynamic"
    TAX = "tax"


@dataclass(frozen=True)
class Season:
    """Days of the year by (month, day) ranges, inclusive; a range may wrap the new year (Nov 1 - Feb 28)."""

    name: str
    ranges: tuple[tuple[tuple[int, int], tuple[int, int]], ...]

    def contains(self, month: int, day: int) -> bool:
        key = (month, day)
        for start, end in self.ranges:
            if start <= end:
                if start <= key <= end:
                    return True
            elif key >= start or key <= end:
                return True
        return False


@dataclass(frozen=True)
class Tiers:
    """Consumption blocks: upper bounds in kWh of each tier but the last (unbounded), strictly increasing."""

    bounds_kwh: tuple[Decimal, ...]
    basis: TierBasis = TierBasis.MONTHLY
    allocation: TierAllocation = TierAllocation.PRO_RATA

    @property
    def count(self) -> int:
        return len(self.bounds_kwh) + 1


@dataclass(frozen=True)
class Demand:
    """Charges on the highest mean power over a clock-aligned window in the bill period: flat, and by period."""

    window_minutes: int
    flat_price_per_kw: Decimal = Decimal(0)
    price_per_kw: dict[str, Decimal] = field(default_factory=dict)  # "season/period" -> price


@dataclass(frozen=True)
class Export:
    mode: ExportMode
    price_per_kwh: Decimal  # the credit for exported energy (net billing) or a surplus (net metering)


@dataclass(frozen=True)
class Tax:
    name: str
    rate: Decimal  # 0.16 for 16 %
    applies_to: frozenset[Component]


@dataclass(frozen=True)
class TariffVersion:
    effective_from: date | None  # None: from the beginning of time
    periods: tuple[str, ...]
    seasons: tuple[Season, ...]
    # (season, day type) -> ((minute of day from, period), ...) sorted, the first at minute 0
    schedules: dict[tuple[str, DayType], tuple[tuple[int, str], ...]]
    # "season/period" -> price per kWh of each tier (one price when there are no tiers)
    energy_prices: dict[str, tuple[Decimal, ...]]
    tiers: Tiers | None = None
    fixed_per_month: Decimal = Decimal(0)
    fixed_per_day: Decimal = Decimal(0)
    minimum_per_month: Decimal = Decimal(0)
    demand: Demand | None = None
    export: Export | None = None
    dynamic_prices: bool = False  # an energy price per interval comes from a price series, added to the above
    taxes: tuple[Tax, ...] = ()

    def key(self, season: str, period: str) -> str:
        return f"{season}/{period}"


@dataclass(frozen=True)
class HolidayRule:
    country: str  # ISO 3166-1 alpha-2 for the `holidays` package
    subdivision: str | None = None
    observed: bool = True  # a holiday falling on a weekend is also kept on its observed weekday


@dataclass(frozen=True)
class Tariff:
    name: str
    currency: str
    timezone: str  # IANA zone the schedules are in
    versions: tuple[TariffVersion, ...]  # by effective_from, the first possibly None
    holidays: HolidayRule | None = None
    source: str = ""  # where the tariff comes from (a utility's schedule, a URDB label)
    rounding_digits: int = 2  # the currency's minor unit: each bill line is rounded once to it

    def version_on(self, day: date) -> TariffVersion | None:
        """The version in force on local date `day`, or None before the first."""
        found = None
        for version in self.versions:
            if version.effective_from is None or version.effective_from <= day:
                found = version
        return found


# ISO 4217 minor units of the currencies whose exponent is not 2.
_MINOR_DIGITS = {"JPY": 0, "KRW": 0, "VND": 0, "CLP": 0, "ISK": 0, "UGX": 0, "RWF": 0, "XOF": 0, "XAF": 0,
                 "KWD": 3, "BHD": 3, "OMR": 3, "JOD": 3, "TND": 3, "LYD": 3, "IQD": 3}  # fmt: skip


def minor_digits(currency: str) -> int:
    return _MINOR_DIGITS.get(currency.upper(), 2)
