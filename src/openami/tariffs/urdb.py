"""OpenEI Utility Rate Database (URDB) records, API v7 and v8 field names, compiled into `model.Tariff`.

A URDB record prices energy by period, each period a list of tiers `{max, rate, adj, unit, sell}`, on two 12 x 24
month-by-hour schedules (weekdays; Saturdays and Sundays), and adds fixed and minimum charges, time-of-use and
monthly ("flat") demand charges, and export credits (`dgrules` in v8, `usenetmetering` in v7, `sell` per tier).

The compiler makes one season per group of months that share both energy schedules, both demand schedules, the
flat demand price and the fuel adjustment; periods are named after the record's energy periods (`p0`, `p1`, ...),
or `p1_d0`, `p1_d2` when one energy period meets several demand periods in a season. The price of a tier is
rate + adj (+ the month's fuel adjustment). URDB names no holidays: the tariff has none of its own, and the
weekend schedule prices Saturdays, Sundays and any holidays given at billing. URDB carries no time zone either: a
`timezone` key (an openami extension) is used when the record has one, else UTC. Prices are US dollars.

What the model cannot express is refused with a ValidationError naming the field
(`urdb.energyratestructure[2][0].unit`), never approximated. docs/tariffs.md, "URDB import", lists what maps
where and what is refused.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from openami.common.errors import ValidationError
from openami.tariffs.model import (
    DayType,
    Demand,
    Export,
    ExportMode,
    Season,
    Tariff,
    TariffVersion,
    TierAllocation,
    TierBasis,
    Tiers,
)

CURRENCY = "USD"  # URDB prices are US dollars
DEFAULT_DEMAND_WINDOW_MINUTES = 15  # when a record with demand charges gives no `demandwindow`
_DEMAND_WINDOWS = (5, 10, 15, 30, 60)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_LEAP_YEAR = 2024  # a season's last day of February is the 29th, so leap years are covered

# Fields that describe the rate but do not price it: accepted and left aside.
_INFO_KEYS = frozenset({
    "label", "uri", "utility", "name", "sector", "servicetype", "description", "source", "sourceparent",
    "basicinformationcomments", "energycomments", "demandcomments", "startdate", "enddate", "supercedes",
    "supersedes", "approved", "is_default", "eia", "eiaid", "utility_id", "country", "latest_update", "revisions",
    "peakkwcapacitymin", "peakkwcapacitymax", "peakkwcapacityhistory", "peakkwhusagemin", "peakkwhusagemax",
    "peakkwhusagehistory", "voltageminimum", "voltagemaximum", "voltagecategory", "phasewiring", "demandunits",
    "demandmin", "demandmax", "demandhist", "energyattrs", "demandattrs", "fixedattrs", "fixedkeyvals",
    "energykeyvals", "demandkeyvals",
    "timezone",  # openami's extension: the IANA zone of the schedules
})  # fmt: skip
# Fields that price: compiled, or refused when the model cannot express them.
_PRICE_KEYS = frozenset({
    "energyratestructure", "energyweekdayschedule", "energyweekendschedule", "fueladjustmentsmonthly",
    "fixedmonthlycharge", "fixedchargefirstmeter", "fixedchargeeaaddl", "fixedchargeunits", "minmonthlycharge",
    "mincharge", "minchargeunits", "annualmincharge", "demandratestructure", "demandweekdayschedule",
    "demandweekendschedule", "demandrateunit", "demandwindow", "flatdemandstructure", "flatdemandmonths",
    "flatdemandunit", "demandratchetpercentage", "demandreactivepowercharge", "coincidentratestructure",
    "coincidentrateschedule", "coincidentschedule", "coincidentrateunit", "lookbackpercent", "lookbackrange",
    "lookbackmonths", "dgrules", "usenetmetering",
})  # fmt: skip
_DG_RULES = {"Net Metering": ExportMode.NET_METERING, "Net Billing Instantaneous": ExportMode.NET_BILLING}
_DG_REFUSED = {
    "Net Billing Hourly": "nets import and export within each hour before crediting, and the model credits "
    "each interval's export as the meter measured it",
    "Buy All Sell All": "buys all consumption and sells all generation, which a meter's import and export "
    "columns do not carry",
}
_FIXED_UNITS = ("$/month", "$/day", "$/year")

Schedule = list[list[int]]  # 12 months x 24 hours of period indices


@dataclass(frozen=True)
class _EnergyTier:
    max_kwh: Decimal | None  # None on the last tier
    price: Decimal  # rate + adj, per kWh
    sell: Decimal | None  # credit per exported kWh, when given


@dataclass(frozen=True)
class _Rates:
    """A record's pricing fields, checked, before they are grouped into seasons."""

    energy: list[list[_EnergyTier]]
    weekday: Schedule
    weekend: Schedule
    fuel: list[Decimal]  # per month, per kWh
    demand_prices: list[Decimal] | None  # per time-of-use demand period, per kW
    demand_weekday: Schedule | None
    demand_weekend: Schedule | None
    flat_by_month: list[Decimal] | None  # flat demand price per kW of each month


def parse_urdb(data: Any, where: str = "urdb") -> Tariff:
    """Compile a URDB record (a bare record, or `{"items": [record, ...]}` taking the first) into a `Tariff`."""
    record, at = _record(data, where)
    unknown = sorted(str(k) for k in record if k not in _INFO_KEYS and k not in _PRICE_KEYS)
    if unknown:
        raise ValidationError(
            f"unknown URDB field(s) {', '.join(unknown)}: refused, since a field openami does not know might "
            "price something",
            at,
        )
    fields = {k: v for k, v in record.items() if v is not None}  # URDB writes absent values as null
    _refuse_unexpressible(fields, at)
    zone = _timezone(fields.get("timezone", "UTC"), f"{at}.timezone")
    energy = _energy_structure(fields.get("energyratestructure"), f"{at}.energyratestructure")
    demand_prices = _demand_structure(fields, "demandratestructure", "demandrateunit", at)
    demand_schedules = [
        _schedule(fields, key, len(demand_prices), "demandratestructure", at) if demand_prices else None
        for key in ("demandweekdayschedule", "demandweekendschedule")
    ]
    for key in ("demandweekdayschedule", "demandweekendschedule"):
        if demand_prices is None and key in fields:
            raise ValidationError("a demand schedule without demandratestructure", f"{at}.{key}")
    rates = _Rates(
        energy=energy,
        weekday=_schedule(fields, "energyweekdayschedule", len(energy), "energyratestructure", at),
        weekend=_schedule(fields, "energyweekendschedule", len(energy), "energyratestructure", at),
        fuel=_fuel(fields.get("fueladjustmentsmonthly"), f"{at}.fueladjustmentsmonthly"),
        demand_prices=demand_prices,
        demand_weekday=demand_schedules[0],
        demand_weekend=demand_schedules[1],
        flat_by_month=_flat_demand(fields, at),
    )
    fixed_per_month, fixed_per_day = _fixed(fields, at)
    version = _compile(
        rates,
        at,
        fixed_per_month=fixed_per_month,
        fixed_per_day=fixed_per_day,
        minimum_per_month=_minimum(fields, at),
        window=_window(fields.get("demandwindow"), f"{at}.demandwindow"),
        export=_export(fields, energy, at),
    )
    name = fields.get("name") if isinstance(fields.get("name"), str) else "URDB rate"
    utility = fields.get("utility")
    label = fields.get("label")
    return Tariff(
        name=f"{utility}: {name}" if isinstance(utility, str) and utility else str(name),
        currency=CURRENCY,
        timezone=zone,
        versions=(version,),
        holidays=None,
        source=" ".join(["OpenEI URDB", *(str(v) for v in (label, fields.get("uri")) if isinstance(v, str))]),
        rounding_digits=2,
    )


# --- compiling: seasons, periods, prices ---------------------------------------------------------------------


def _compile(
    rates: _Rates,
    at: str,
    *,
    fixed_per_month: Decimal,
    fixed_per_day: Decimal,
    minimum_per_month: Decimal,
    window: int,
    export: Export | None,
) -> TariffVersion:
    groups: dict[tuple[Any, ...], list[int]] = {}
    for m in range(12):
        key = (
            tuple(rates.weekday[m]),
            tuple(rates.weekend[m]),
            tuple(rates.demand_weekday[m]) if rates.demand_weekday else None,
            tuple(rates.demand_weekend[m]) if rates.demand_weekend else None,
            rates.flat_by_month[m] if rates.flat_by_month else None,
            rates.fuel[m],
        )
        groups.setdefault(key, []).append(m)
    seasons: list[Season] = []
    schedules: dict[tuple[str, DayType], tuple[tuple[int, str], ...]] = {}
    prices: dict[str, tuple[Decimal, ...]] = {}
    per_kw: dict[str, Decimal] = {}
    single_period: dict[str, str | None] = {}  # season -> its one period, when it has only one
    periods: dict[str, tuple[int, int]] = {}  # name -> sort key
    for months in groups.values():
        season = _season(months)
        m = months[0]
        rows = [
            _pairs(rates.weekday[m], rates.demand_weekday, m),
            _pairs(rates.weekend[m], rates.demand_weekend, m),
        ]
        pairs = sorted(
            {pair for row in rows for pair in row}, key=lambda p: (p[0], -1 if p[1] is None else p[1])
        )
        names = _period_names(pairs)
        _check_demand_periods(rates, pairs, months, at)
        seasons.append(season)
        weekday_slots, weekend_slots = (_slots([names[pair] for pair in row]) for row in rows)
        schedules[season.name, DayType.WEEKDAY] = weekday_slots
        for day_type in (DayType.SATURDAY, DayType.SUNDAY, DayType.HOLIDAY):
            schedules[season.name, day_type] = weekend_slots
        for (e, d), name in names.items():
            periods[name] = (e, -1 if d is None else d)
            prices[f"{season.name}/{name}"] = tuple(t.price + rates.fuel[m] for t in rates.energy[e])
            if d is not None and rates.demand_prices is not None and rates.demand_prices[d]:
                per_kw[f"{season.name}/{name}"] = rates.demand_prices[d]
        used = set(names.values())
        single_period[season.name] = used.pop() if len(used) == 1 else None
    flat_price = _fold_flat_demand(rates, seasons, single_period, per_kw, at)
    bounds = tuple(t.max_kwh for t in rates.energy[0] if t.max_kwh is not None)
    has_demand = rates.demand_prices is not None or rates.flat_by_month is not None
    return TariffVersion(
        effective_from=None,
        periods=tuple(sorted(periods, key=periods.__getitem__)),
        seasons=tuple(seasons),
        schedules=schedules,
        energy_prices=prices,
        tiers=Tiers(bounds, TierBasis.MONTHLY, TierAllocation.PRO_RATA) if bounds else None,
        fixed_per_month=fixed_per_month,
        fixed_per_day=fixed_per_day,
        minimum_per_month=minimum_per_month,
        demand=Demand(window, flat_price, per_kw) if has_demand else None,
        export=export,
    )


def _pairs(energy_row: list[int], demand: Schedule | None, month: int) -> list[tuple[int, int | None]]:
    """(energy period, demand period or None) of each hour of a month's day."""
    return [(e, demand[month][h] if demand else None) for h, e in enumerate(energy_row)]


def _period_names(pairs: list[tuple[int, int | None]]) -> dict[tuple[int, int | None], str]:
    """`p<e>`, or `p<e>_d<d>` for an energy period that meets several demand periods in the season."""
    demand_of: dict[int, set[int | None]] = defaultdict(set)
    for e, d in pairs:
        demand_of[e].add(d)
    return {(e, d): f"p{e}" if len(demand_of[e]) == 1 else f"p{e}_d{d}" for e, d in pairs}


def _check_demand_periods(
    rates: _Rates, pairs: list[tuple[int, int | None]], months: list[int], at: str
) -> None:
    """The model takes each season/period's own highest demand: a charged demand period must not span two energy
    periods in a season, or its peak would be split (and charged twice)."""
    if rates.demand_prices is None:
        return
    energy_of: dict[int, set[int]] = defaultdict(set)
    for e, d in pairs:
        if d is not None:
            energy_of[d].add(e)
    for d, energies in sorted(energy_of.items()):
        if rates.demand_prices[d] and len(energies) > 1:
            raise ValidationError(
                f"in {_months_text(months)}, demand period {d} spans energy periods "
                f"{', '.join(map(str, sorted(energies)))}; the model charges each energy period's own peak, "
                "so this demand charge cannot be expressed",
                f"{at}.demandweekdayschedule",
            )


def _fold_flat_demand(
    rates: _Rates,
    seasons: list[Season],
    single_period: dict[str, str | None],
    per_kw: dict[str, Decimal],
    at: str,
) -> Decimal:
    """The model's one flat demand price; a flat price that differs by month is folded into the period demand
    price of seasons with a single period (whose peak is the month's peak), and refused otherwise."""
    if rates.flat_by_month is None:
        return Decimal(0)
    if len(set(rates.flat_by_month)) == 1:
        return rates.flat_by_month[0]
    for season in seasons:
        price = rates.flat_by_month[_season_months(season)[0]]
        if not price:
            continue
        period = single_period[season.name]
        if period is None:
            raise ValidationError(
                f"the flat demand price differs by month and {season.name} (at {price}/kW) has several "
                "periods: the model has one flat demand price for the year",
                f"{at}.flatdemandmonths",
            )
        key = f"{season.name}/{period}"
        per_kw[key] = per_kw.get(key, Decimal(0)) + price
    return Decimal(0)


def _season(months: list[int]) -> Season:
    runs: list[list[int]] = []
    for m in months:
        if runs and runs[-1][-1] == m - 1:
            runs[-1].append(m)
        else:
            runs.append([m])
    if len(months) == 12:
        name = "all_year"
    else:
        name = "_".join(_MONTHS[r[0]] if len(r) == 1 else f"{_MONTHS[r[0]]}-{_MONTHS[r[-1]]}" for r in runs)
    ranges = tuple(((r[0] + 1, 1), (r[-1] + 1, calendar.monthrange(_LEAP_YEAR, r[-1] + 1)[1])) for r in runs)
    return Season(name, ranges)


def _season_months(season: Season) -> list[int]:
    return [m for m in range(12) if season.contains(m + 1, 1)]


def _months_text(months: list[int]) -> str:
    return ", ".join(_MONTHS[m] for m in months)


def _slots(names: list[str]) -> tuple[tuple[int, str], ...]:
    slots: list[tuple[int, str]] = []
    for hour, name in enumerate(names):
        if not slots or slots[-1][1] != name:
            slots.append((hour * 60, name))
    return tuple(slots)


# --- reading the fields --------------------------------------------------------------------------------------


def _record(data: Any, where: str) -> tuple[dict[str, Any], str]:
    if not isinstance(data, dict):
        raise ValidationError(
            f'a URDB record, or {{"items": [record, ...]}}, must be a JSON object, got {type(data).__name__}',
            where,
        )
    if "items" not in data:
        return data, where
    items = data["items"]
    if not isinstance(items, list) or not items:
        raise ValidationError(
            "must be a non-empty list of URDB records (the first is imported)", f"{where}.items"
        )
    return _mapping(items[0], f"{where}.items[0]"), f"{where}.items[0]"


def _refuse_unexpressible(fields: dict[str, Any], at: str) -> None:
    """Fields the model has no component for: refused unless they are empty or zero."""
    ratchets = fields.get("demandratchetpercentage")
    if ratchets is not None:
        for i, value in enumerate(_list(ratchets, f"{at}.demandratchetpercentage")):
            if _number(value, f"{at}.demandratchetpercentage[{i}]"):
                raise ValidationError(
                    "demand ratchets (a share of earlier months' peaks) are not supported by the model",
                    f"{at}.demandratchetpercentage[{i}]",
                )
    for key, why in (
        ("demandreactivepowercharge", "reactive power charges need kVAR, which the load does not carry"),
        ("lookbackpercent", "billing demand from earlier months' peaks (a look-back) is not supported"),
        ("lookbackrange", "billing demand from earlier months' peaks (a look-back) is not supported"),
        ("annualmincharge", "the model has a monthly minimum charge only, not a yearly one"),
    ):
        if key in fields and _number(fields[key], f"{at}.{key}"):
            raise ValidationError(why, f"{at}.{key}")
    if _list(fields.get("coincidentratestructure", []), f"{at}.coincidentratestructure"):
        raise ValidationError(
            "coincident demand charges need the system's peak hours, which the model does not carry",
            f"{at}.coincidentratestructure",
        )
    if (
        "fixedchargeeaaddl" in fields
    ):  # each additional meter's charge: openami bills every meter as a first one
        _money(fields["fixedchargeeaaddl"], f"{at}.fixedchargeeaaddl", nonnegative=True)


def _timezone(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"must be an IANA time zone name, got {value!r}", where)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"unknown IANA time zone {value!r}", where) from None
    return value


def _energy_structure(data: Any, where: str) -> list[list[_EnergyTier]]:
    if data is None:
        raise ValidationError("missing: openami imports records with energy rates", where)
    periods = _list(data, where)
    if not periods:
        raise ValidationError("must list at least one period", where)
    structure = []
    for p, tiers_data in enumerate(periods):
        tiers = _list(tiers_data, f"{where}[{p}]")
        if not tiers:
            raise ValidationError("a period needs at least one tier", f"{where}[{p}]")
        parsed: list[_EnergyTier] = []
        for t, tier_data in enumerate(tiers):
            at = f"{where}[{p}][{t}]"
            tier = {k: v for k, v in _mapping(tier_data, at).items() if v is not None}
            _known(tier, {"max", "rate", "adj", "unit", "sell"}, at)
            unit = tier.get("unit", "kWh")
            if not isinstance(unit, str) or unit.lower() != "kwh":
                raise ValidationError(
                    f"tier bounds in {unit!r} are not supported: the model's tiers are kWh per month",
                    f"{at}.unit",
                )
            last = t == len(tiers) - 1
            maximum = _bound(tier.get("max"), last, parsed[-1].max_kwh if parsed else Decimal(0), f"{at}.max")
            sell = tier.get("sell")
            parsed.append(
                _EnergyTier(
                    maximum,
                    _required_number(tier, "rate", at) + _money(tier.get("adj", 0), f"{at}.adj"),
                    None if sell is None else _money(sell, f"{at}.sell", nonnegative=True),
                )
            )
        structure.append(parsed)
    maxima = [tuple(t.max_kwh for t in period) for period in structure]
    for p, period_maxima in enumerate(maxima[1:], start=1):
        if period_maxima != maxima[0]:
            raise ValidationError(
                f"periods 0 and {p} disagree on tier maxima ({_kwh_list(maxima[0])} vs {_kwh_list(period_maxima)}):"
                " the model has one set of tier bounds for every period",
                where,
            )
    return structure


def _bound(value: Any, last: bool, below: Decimal | None, where: str) -> Decimal | None:
    if last:
        if value is not None:
            raise ValidationError(
                "the last tier has a max: energy above it would have no price (drop it, or add a tier)", where
            )
        return None
    if value is None:
        raise ValidationError("every tier but the last needs a max (kWh per month)", where)
    maximum = _money(value, where)
    if below is not None and maximum <= below:
        raise ValidationError(f"tiers must increase: {maximum} kWh is not above {below} kWh", where)
    return maximum


def _kwh_list(maxima: tuple[Decimal | None, ...]) -> str:
    return "[" + ", ".join(str(m) for m in maxima if m is not None) + "] kWh"


def _schedule(fields: dict[str, Any], key: str, count: int, structure: str, at: str) -> Schedule:
    where = f"{at}.{key}"
    if key not in fields:
        if count == 1:
            return [[0] * 24 for _ in range(12)]
        raise ValidationError(
            f"missing: {structure} has {count} periods, so a schedule must say when each applies", where
        )
    rows = _list(fields[key], where)
    if len(rows) != 12:
        raise ValidationError(f"must have 12 rows (months), got {len(rows)}", where)
    out = []
    for m, row_data in enumerate(rows):
        row = _list(row_data, f"{where}[{m}]")
        if len(row) != 24:
            raise ValidationError(f"must have 24 hours, got {len(row)}", f"{where}[{m}]")
        for h, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
                raise ValidationError(
                    f"must be a period of {structure} (0 to {count - 1}), got {value!r}", f"{where}[{m}][{h}]"
                )
        out.append(list(row))
    return out


def _fuel(data: Any, where: str) -> list[Decimal]:
    if data is None:
        return [Decimal(0)] * 12
    values = _list(data, where)
    if len(values) != 12:
        raise ValidationError(f"must have 12 values ($/kWh per month), got {len(values)}", where)
    return [_money(v, f"{where}[{i}]") for i, v in enumerate(values)]


def _demand_structure(fields: dict[str, Any], key: str, unit_key: str, at: str) -> list[Decimal] | None:
    """Price per kW of each demand period: one tier each, in kW."""
    unit = fields.get(unit_key, "kW")
    if unit != "kW":
        raise ValidationError(
            f"demand in {unit!r} is not supported: the model charges kW", f"{at}.{unit_key}"
        )
    if key not in fields:
        return None
    where = f"{at}.{key}"
    periods = _list(fields[key], where)
    if not periods:
        raise ValidationError("must list at least one period", where)
    prices = []
    for p, tiers_data in enumerate(periods):
        tiers = _list(tiers_data, f"{where}[{p}]")
        if len(tiers) != 1:
            raise ValidationError(
                f"{len(tiers)} tiers: the model's demand charges have one price per period, no tiers",
                f"{where}[{p}]",
            )
        tier_at = f"{where}[{p}][0]"
        tier = {k: v for k, v in _mapping(tiers[0], tier_at).items() if v is not None}
        _known(tier, {"max", "rate", "adj", "unit"}, tier_at)
        if tier.get("unit", "kW") != "kW":
            raise ValidationError(
                f"demand in {tier['unit']!r} is not supported: the model charges kW", f"{tier_at}.unit"
            )
        if tier.get("max") is not None:
            raise ValidationError(
                "a max on the only tier would leave demand above it unpriced", f"{tier_at}.max"
            )
        price = _required_number(tier, "rate", tier_at) + _money(tier.get("adj", 0), f"{tier_at}.adj")
        if price < 0:
            raise ValidationError(f"rate + adj cannot be negative, got {price}", tier_at)
        prices.append(price)
    return prices


def _flat_demand(fields: dict[str, Any], at: str) -> list[Decimal] | None:
    """The flat demand price per kW of each month, or None without flat demand."""
    prices = _demand_structure(fields, "flatdemandstructure", "flatdemandunit", at)
    where = f"{at}.flatdemandmonths"
    if prices is None:
        if "flatdemandmonths" in fields:
            raise ValidationError("flat demand months without flatdemandstructure", where)
        return None
    if "flatdemandmonths" not in fields:
        if len(prices) == 1:
            return prices * 12
        raise ValidationError(f"missing: flatdemandstructure has {len(prices)} periods", where)
    months = _list(fields["flatdemandmonths"], where)
    if len(months) != 12:
        raise ValidationError(
            f"must have 12 values (a flat demand period per month), got {len(months)}", where
        )
    for m, value in enumerate(months):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(prices):
            raise ValidationError(
                f"must be a period of flatdemandstructure (0 to {len(prices) - 1}), got {value!r}",
                f"{where}[{m}]",
            )
    return [prices[p] for p in months]


def _window(value: Any, where: str) -> int:
    if value is None:
        return DEFAULT_DEMAND_WINDOW_MINUTES
    number = _number(value, where)
    if number not in _DEMAND_WINDOWS:
        raise ValidationError(
            f"must be one of {', '.join(map(str, _DEMAND_WINDOWS))} minutes, got {value!r}", where
        )
    return int(number)


def _fixed(fields: dict[str, Any], at: str) -> tuple[Decimal, Decimal]:
    """(per month, per day) from v8's fixedchargefirstmeter + fixedchargeunits or v7's fixedmonthlycharge."""
    units = _units(fields.get("fixedchargeunits", "$/month"), f"{at}.fixedchargeunits")
    per_month = per_day = Decimal(0)
    if "fixedchargefirstmeter" in fields:
        amount = _money(fields["fixedchargefirstmeter"], f"{at}.fixedchargefirstmeter", nonnegative=True)
        if units == "$/day":
            per_day = amount
        elif units == "$/year":
            per_month = amount / 12  # a twelfth each month; rounded once per bill line
        else:
            per_month = amount
    if "fixedmonthlycharge" in fields:
        monthly = _money(fields["fixedmonthlycharge"], f"{at}.fixedmonthlycharge", nonnegative=True)
        if "fixedchargefirstmeter" in fields and (per_month, per_day) != (monthly, Decimal(0)):
            raise ValidationError(
                f"{monthly} $/month disagrees with fixedchargefirstmeter "
                f"({fields['fixedchargefirstmeter']} {units})",
                f"{at}.fixedmonthlycharge",
            )
        per_month = monthly
    return per_month, per_day


def _minimum(fields: dict[str, Any], at: str) -> Decimal:
    """Monthly minimum from v8's mincharge + minchargeunits or v7's minmonthlycharge."""
    units = _units(fields.get("minchargeunits", "$/month"), f"{at}.minchargeunits")
    minimum = Decimal(0)
    if "mincharge" in fields:
        minimum = _money(fields["mincharge"], f"{at}.mincharge", nonnegative=True)
        if minimum and units != "$/month":
            raise ValidationError(
                f"a minimum charge in {units} is not supported: the model has a monthly minimum only",
                f"{at}.minchargeunits",
            )
    if "minmonthlycharge" in fields:
        monthly = _money(fields["minmonthlycharge"], f"{at}.minmonthlycharge", nonnegative=True)
        if "mincharge" in fields and monthly != minimum:
            raise ValidationError(
                f"{monthly} $/month disagrees with mincharge ({minimum} {units})", f"{at}.minmonthlycharge"
            )
        minimum = monthly
    return minimum


def _export(fields: dict[str, Any], energy: list[list[_EnergyTier]], at: str) -> Export | None:
    """Net metering or net billing at the one sell price of every tier (none given: 0)."""
    sells = [(p, t, tier.sell) for p, period in enumerate(energy) for t, tier in enumerate(period)]
    given = [s for s in sells if s[2] is not None]
    mode: ExportMode | None
    if "dgrules" in fields:
        rule = fields["dgrules"]
        if rule in _DG_REFUSED:
            raise ValidationError(f"{rule!r} {_DG_REFUSED[rule]}", f"{at}.dgrules")
        if rule not in _DG_RULES:
            raise ValidationError(
                f"must be one of {', '.join(map(repr, [*_DG_RULES, *_DG_REFUSED]))}, got {rule!r}",
                f"{at}.dgrules",
            )
        mode = _DG_RULES[rule]
    elif "usenetmetering" in fields:
        flag = fields["usenetmetering"]
        if not isinstance(flag, bool):
            raise ValidationError(f"must be true or false, got {flag!r}", f"{at}.usenetmetering")
        mode = ExportMode.NET_METERING if flag else ExportMode.NET_BILLING if given else None
    else:
        mode = ExportMode.NET_BILLING if given else None
    if mode is None:
        return None
    first_p, first_t, _ = sells[0]
    price = sells[0][2] or Decimal(0)
    for p, t, sell in sells[1:]:
        if (sell or Decimal(0)) != price:
            raise ValidationError(
                f"sell {sell or 0} differs from {price} at energyratestructure[{first_p}][{first_t}]: the model has "
                "one export price",
                f"{at}.energyratestructure[{p}][{t}].sell",
            )
    return Export(mode, price)


# --- small readers ---------------------------------------------------------------------------------------------


def _mapping(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationError(f"must be an object, got {type(data).__name__}", where)
    return data


def _list(data: Any, where: str) -> list[Any]:
    if not isinstance(data, list):
        raise ValidationError(f"must be a list, got {type(data).__name__}", where)
    return data


def _known(raw: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        raise ValidationError(
            f"unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})", where
        )


def _units(value: Any, where: str) -> str:
    if value not in _FIXED_UNITS:
        raise ValidationError(f"must be one of {', '.join(_FIXED_UNITS)}, got {value!r}", where)
    return str(value)


def _number(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValidationError(f"must be a number, got {value!r}", where)
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValidationError(f"must be a number, got {value!r}", where) from None
    if not number.is_finite():
        raise ValidationError(f"must be a finite number, got {value!r}", where)
    return number


def _required_number(raw: dict[str, Any], key: str, where: str) -> Decimal:
    if raw.get(key) is None:
        raise ValidationError("missing", f"{where}.{key}")
    return _number(raw[key], f"{where}.{key}")


def _money(value: Any, where: str, *, nonnegative: bool = False) -> Decimal:
    number = _number(value, where)
    if nonnegative and number < 0:
        raise ValidationError(f"cannot be negative, got {number}", where)
    return number
