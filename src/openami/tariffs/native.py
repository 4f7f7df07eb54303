"""The native tariff format (YAML or JSON; docs/tariffs.md): read, checked whole, compiled into `model.Tariff`.

Every error names its place (`versions[0].schedules.summer.weekday`) and what is wrong; the first found is raised.
"""

from __future__ import annotations

import enum
import json
import re
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
import yaml

from openami.common.errors import ValidationError
from openami.tariffs.model import (
    Component,
    DayType,
    Demand,
    Export,
    ExportMode,
    HolidayRule,
    Season,
    Tariff,
    TariffVersion,
    Tax,
    TierAllocation,
    TierBasis,
    Tiers,
    minor_digits,
)

_VERSION_KEYS = {
    "effective_from", "periods", "seasons", "schedules", "energy", "tiers", "fixed", "minimum", "demand",
    "export", "dynamic_prices", "taxes",
}  # fmt: skip
_TOP_KEYS = {"name", "currency", "timezone", "source", "holidays", "versions"}
_DAY_KEYS = {"weekday": (DayType.WEEKDAY,), "saturday": (DayType.SATURDAY,), "sunday": (DayType.SUNDAY,),
             "holiday": (DayType.HOLIDAY,), "weekend": (DayType.SATURDAY, DayType.SUNDAY),
             "all": tuple(DayType)}  # fmt: skip
_HHMM = re.compile(r"(\d{2}):(\d{2})")
_MONTH_DAY = re.compile(r"(\d{2})-(\d{2})")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,39}")
_LEAP_YEAR = 2024  # day-of-year checks walk a leap year, so 29 February belongs to a season too


def load_tariff(path: Path) -> Tariff:
    """Read a native tariff file (.yaml/.yml or .json)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError(f"cannot read the tariff file: {exc.strerror}", str(path)) from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValidationError(
            f"not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {exc}", str(path)
        ) from exc
    try:
        return parse_tariff(data)
    except ValidationError as exc:
        raise ValidationError(exc.message, f"{path}, {exc.location}") from None


def parse_tariff(data: Any, where: str = "tariff") -> Tariff:
    """Compile the native format's data (as YAML or JSON load it) into a checked `Tariff`."""
    top = _mapping(data, where)
    _known(top, _TOP_KEYS | _VERSION_KEYS, where)
    name = _text(top.get("name"), f"{where}.name")
    currency = _text(top.get("currency"), f"{where}.currency")
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise ValidationError(f"must be an ISO 4217 code such as USD, got {currency!r}", f"{where}.currency")
    zone = _text(top.get("timezone"), f"{where}.timezone")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"unknown IANA time zone {zone!r}", f"{where}.timezone") from None
    rule = _holidays(top.get("holidays"), f"{where}.holidays")
    if "versions" in top:
        if _VERSION_KEYS & top.keys():
            raise ValidationError(
                "give either `versions` or one version's fields at the top, not both", where
            )
        raw_versions = top["versions"]
        if not isinstance(raw_versions, list) or not raw_versions:
            raise ValidationError("must be a non-empty list of versions", f"{where}.versions")
        versions = [_version(v, f"{where}.versions[{i}]") for i, v in enumerate(raw_versions)]
    else:
        versions = [_version({k: v for k, v in top.items() if k in _VERSION_KEYS}, where)]
    starts = [v.effective_from for v in versions]
    if any(s is None for s in starts[1:]):
        raise ValidationError("every version but the first needs `effective_from`", f"{where}.versions")
    dated = [s for s in starts if s is not None]
    if dated != sorted(set(dated)):
        raise ValidationError(
            "versions must be in order of `effective_from`, each date once", f"{where}.versions"
        )
    return Tariff(
        name=name,
        currency=currency,
        timezone=zone,
        versions=tuple(versions),
        holidays=rule,
        source=str(top.get("source") or ""),
        rounding_digits=minor_digits(currency),
    )


# --- one version ---------------------------------------------------------------------------------------------


def _version(data: Any, where: str) -> TariffVersion:
    raw = _mapping(data, where)
    _known(raw, _VERSION_KEYS, where)
    effective = raw.get("effective_from")
    if effective is not None:
        effective = _date(effective, f"{where}.effective_from")
    periods = _names(raw.get("periods"), f"{where}.periods")
    seasons = _seasons(raw.get("seasons", {"all_year": [["01-01", "12-31"]]}), f"{where}.seasons")
    season_names = [s.name for s in seasons]
    schedules = _schedules(raw.get("schedules"), season_names, periods, f"{where}.schedules")
    tiers = _tiers(raw.get("tiers"), f"{where}.tiers")
    prices = _energy(raw.get("energy"), season_names, periods, tiers, f"{where}.energy")
    used = {f"{season}/{period}" for (season, _d), slots in schedules.items() for _m, period in slots}
    missing = sorted(used - prices.keys())
    if missing:
        raise ValidationError(
            f"no price for {', '.join(missing)}, which the schedules use", f"{where}.energy"
        )
    export = _export(raw.get("export"), f"{where}.export")
    if (
        export is not None
        and export.mode is ExportMode.NET_METERING
        and tiers is not None
        and tiers.allocation is TierAllocation.CHRONOLOGICAL
    ):
        raise ValidationError(
            "net metering nets a whole bill period before tiers apply: use allocation pro_rata",
            f"{where}.tiers.allocation",
        )
    fixed = _mapping(raw.get("fixed", {}), f"{where}.fixed")
    _known(fixed, {"per_month", "per_day"}, f"{where}.fixed")
    minimum = _mapping(raw.get("minimum", {}), f"{where}.minimum")
    _known(minimum, {"per_month"}, f"{where}.minimum")
    return TariffVersion(
        effective_from=effective,
        periods=tuple(periods),
        seasons=tuple(seasons),
        schedules=schedules,
        energy_prices=prices,
        tiers=tiers,
        fixed_per_month=_money(fixed.get("per_month", 0), f"{where}.fixed.per_month", nonnegative=True),
        fixed_per_day=_money(fixed.get("per_day", 0), f"{where}.fixed.per_day", nonnegative=True),
        minimum_per_month=_money(minimum.get("per_month", 0), f"{where}.minimum.per_month", nonnegative=True),
        demand=_demand(raw.get("demand"), season_names, periods, f"{where}.demand"),
        export=export,
        dynamic_prices=_flag(raw.get("dynamic_prices", False), f"{where}.dynamic_prices"),
        taxes=_taxes(raw.get("taxes", []), f"{where}.taxes"),
    )


def _seasons(data: Any, where: str) -> list[Season]:
    raw = _mapping(data, where)
    if not raw:
        raise ValidationError("needs at least one season", where)
    seasons = []
    for name, ranges in raw.items():
        _name(name, f"{where}.{name}")
        if not isinstance(ranges, list) or not ranges:
            raise ValidationError('must be a list of ["MM-DD", "MM-DD"] ranges', f"{where}.{name}")
        parsed = []
        for i, pair in enumerate(ranges):
            at = f"{where}.{name}[{i}]"
            if not isinstance(pair, list) or len(pair) != 2:
                raise ValidationError('must be ["MM-DD", "MM-DD"] (first and last day, inclusive)', at)
            parsed.append((_month_day(pair[0], at), _month_day(pair[1], at)))
        seasons.append(Season(str(name), tuple(parsed)))
    # Every day of the year in exactly one season.
    day = date(_LEAP_YEAR, 1, 1)
    while day.year == _LEAP_YEAR:
        holders = [s.name for s in seasons if s.contains(day.month, day.day)]
        if len(holders) > 1:
            raise ValidationError(f"seasons overlap on {day:%m-%d}: {', '.join(holders)}", where)
        if not holders:
            raise ValidationError(f"no season covers {day:%m-%d}", where)
        day = date.fromordinal(day.toordinal() + 1)
    return seasons


def _schedules(
    data: Any, seasons: list[str], periods: list[str], where: str
) -> dict[tuple[str, DayType], tuple[tuple[int, str], ...]]:
    if data is None and len(periods) == 1:  # one period all the time: no schedule needed
        return {(s, d): ((0, periods[0]),) for s in seasons for d in DayType}
    raw = _mapping(data, where)
    unknown = sorted(set(raw) - set(seasons))
    if unknown:
        raise ValidationError(f"schedule for undefined season(s) {', '.join(map(str, unknown))}", where)
    out: dict[tuple[str, DayType], tuple[tuple[int, str], ...]] = {}
    for season in seasons:
        at = f"{where}.{season}"
        if season not in raw:
            raise ValidationError("no schedule for this season", at)
        by_day = _mapping(raw[season], at)
        _known(by_day, set(_DAY_KEYS), at)
        # `all` is the default for the day types not named on their own, whatever the keys' order.
        named: set[DayType] = set()
        for key, value in sorted(by_day.items(), key=lambda item: item[0] != "all"):
            slots = _slots(value, periods, f"{at}.{key}")
            for day_type in _DAY_KEYS[key]:
                if key != "all":
                    if day_type in named:
                        raise ValidationError(f"{day_type.name.lower()} is given twice", f"{at}.{key}")
                    named.add(day_type)
                out[season, day_type] = slots
        for day_type in (DayType.WEEKDAY, DayType.SATURDAY, DayType.SUNDAY):
            if (season, day_type) not in out:
                raise ValidationError(f"no schedule for {day_type.name.lower()}s", at)
        out.setdefault(
            (season, DayType.HOLIDAY), out[season, DayType.SUNDAY]
        )  # holidays as Sundays by default
    return out


def _slots(data: Any, periods: list[str], where: str) -> tuple[tuple[int, str], ...]:
    raw = _mapping(data, where)
    slots = []
    for start, period in raw.items():
        match = _HHMM.fullmatch(str(start))
        if not match or int(match[1]) > 23 or int(match[2]) > 59:
            raise ValidationError(f'a start time must be "HH:MM", got {start!r}', where)
        if period not in periods:
            raise ValidationError(
                f"undefined period {period!r} at {start} (periods: {', '.join(periods)})", where
            )
        slots.append((int(match[1]) * 60 + int(match[2]), str(period)))
    slots.sort()
    if not slots or slots[0][0] != 0:
        raise ValidationError('the day must start at "00:00"', where)
    return tuple(slots)


def _tiers(data: Any, where: str) -> Tiers | None:
    if data is None:
        return None
    raw = _mapping(data, where)
    _known(raw, {"bounds_kwh", "basis", "allocation"}, where)
    bounds_raw = raw.get("bounds_kwh")
    if not isinstance(bounds_raw, list) or not bounds_raw:
        raise ValidationError("must be a non-empty list of tier upper bounds in kWh", f"{where}.bounds_kwh")
    bounds = [_number(b, f"{where}.bounds_kwh[{i}]") for i, b in enumerate(bounds_raw)]
    for i, (low, high) in enumerate(zip([Decimal(0), *bounds], bounds, strict=False)):
        if high <= low:
            raise ValidationError(
                f"tiers must increase: {high} kWh is not above {low} kWh", f"{where}.bounds_kwh[{i}]"
            )
    basis = _choice(raw.get("basis", "monthly"), TierBasis, f"{where}.basis")
    allocation = _choice(raw.get("allocation", "pro_rata"), TierAllocation, f"{where}.allocation")
    if basis is TierBasis.YEARLY and allocation is TierAllocation.PRO_RATA:
        raise ValidationError(
            "yearly tiers fill chronologically: use allocation chronological", f"{where}.allocation"
        )
    return Tiers(tuple(bounds), basis, allocation)


def _energy(
    data: Any, seasons: list[str], periods: list[str], tiers: Tiers | None, where: str
) -> dict[str, tuple[Decimal, ...]]:
    raw = _mapping(data, where)
    count = tiers.count if tiers else 1
    prices: dict[str, tuple[Decimal, ...]] = {}
    for key, value in raw.items():
        at = f"{where}.{key}"
        season, _, period = str(key).partition("/")
        if season not in seasons:
            raise ValidationError(f"undefined season {season!r} (seasons: {', '.join(seasons)})", at)
        if period not in periods:
            raise ValidationError(f"undefined period {period!r} (periods: {', '.join(periods)})", at)
        values = value if isinstance(value, list) else [value]
        if len(values) != count:
            raise ValidationError(f"needs {count} price(s), one per tier, got {len(values)}", at)
        prices[str(key)] = tuple(_money(v, f"{at}[{i}]") for i, v in enumerate(values))
    return prices


def _demand(data: Any, seasons: list[str], periods: list[str], where: str) -> Demand | None:
    if data is None:
        return None
    raw = _mapping(data, where)
    _known(raw, {"window_minutes", "flat_per_kw", "per_kw"}, where)
    window = raw.get("window_minutes", 15)
    if not isinstance(window, int) or isinstance(window, bool) or window not in (5, 10, 15, 30, 60):
        raise ValidationError(f"must be 5, 10, 15, 30 or 60, got {window!r}", f"{where}.window_minutes")
    by_period = {}
    for key, value in _mapping(raw.get("per_kw", {}), f"{where}.per_kw").items():
        season, _, period = str(key).partition("/")
        if season not in seasons or period not in periods:
            raise ValidationError(f"undefined season/period {key!r}", f"{where}.per_kw.{key}")
        by_period[str(key)] = _money(value, f"{where}.per_kw.{key}", nonnegative=True)
    flat = _money(raw.get("flat_per_kw", 0), f"{where}.flat_per_kw", nonnegative=True)
    return Demand(window, flat, by_period)


def _export(data: Any, where: str) -> Export | None:
    if data is None:
        return None
    raw = _mapping(data, where)
    _known(raw, {"mode", "price_per_kwh"}, where)
    if "price_per_kwh" not in raw:
        raise ValidationError("missing price_per_kwh (the credit per exported kWh)", where)
    mode = _choice(raw.get("mode", "net_billing"), ExportMode, f"{where}.mode")
    return Export(mode, _money(raw["price_per_kwh"], f"{where}.price_per_kwh", nonnegative=True))


def _taxes(data: Any, where: str) -> tuple[Tax, ...]:
    if not isinstance(data, list):
        raise ValidationError("must be a list of {name, rate, applies_to}", where)
    taxes = []
    for i, item in enumerate(data):
        at = f"{where}[{i}]"
        raw = _mapping(item, at)
        _known(raw, {"name", "rate", "applies_to"}, at)
        rate = _number(raw.get("rate"), f"{at}.rate")
        if not Decimal(0) <= rate < Decimal(1):
            raise ValidationError(
                f"a rate is a fraction from 0 to below 1 (0.16 for 16 %), got {rate}", f"{at}.rate"
            )
        applies = raw.get("applies_to", [c.value for c in Component if c is not Component.TAX])
        if not isinstance(applies, list) or not applies:
            raise ValidationError("must list the components taxed", f"{at}.applies_to")
        components = frozenset(_choice(c, Component, f"{at}.applies_to") for c in applies)
        if Component.TAX in components:
            raise ValidationError("a tax on taxes is not supported", f"{at}.applies_to")
        taxes.append(Tax(_text(raw.get("name"), f"{at}.name"), rate, components))
    return tuple(taxes)


def _holidays(data: Any, where: str) -> HolidayRule | None:
    if data is None:
        return None
    raw = _mapping(data, where)
    _known(raw, {"country", "subdivision", "observed"}, where)
    country = _text(raw.get("country"), f"{where}.country").upper()
    subdivision = raw.get("subdivision")
    try:
        holidays.country_holidays(country, subdiv=subdivision, years=2026)
    except NotImplementedError:
        raise ValidationError(
            f"the holidays package knows no country {country!r}", f"{where}.country"
        ) from None
    except ValueError as exc:
        raise ValidationError(str(exc), f"{where}.subdivision") from None
    return HolidayRule(
        country,
        None if subdivision is None else str(subdivision),
        _flag(raw.get("observed", True), f"{where}.observed"),
    )


# --- small readers ---------------------------------------------------------------------------------------------


def _mapping(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationError(f"must be a mapping, got {type(data).__name__}", where)
    return data


def _known(raw: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        raise ValidationError(
            f"unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})", where
        )


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("must be a non-empty text", where)
    return value.strip()


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValidationError(
            f"a name is a letter then letters, digits, _ or - (40 at most), got {value!r}", where
        )
    return value


def _names(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ValidationError("must be a non-empty list of period names", where)
    names = [_name(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if len(set(names)) != len(names):
        raise ValidationError("a period is named twice", where)
    return names


def _number(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValidationError(f"must be a number, got {value!r}", where)
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValidationError(f"must be a number, got {value!r}", where) from None
    if not number.is_finite():
        raise ValidationError(f"must be a finite number, got {value!r}", where)
    return number


def _money(value: Any, where: str, *, nonnegative: bool = False) -> Decimal:
    number = _number(value, where)
    if nonnegative and number < 0:
        raise ValidationError(f"cannot be negative, got {number}", where)
    return number


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"must be true or false, got {value!r}", where)
    return value


def _date(value: Any, where: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValidationError(f"must be a date YYYY-MM-DD, got {value!r}", where) from None


def _month_day(value: Any, where: str) -> tuple[int, int]:
    match = _MONTH_DAY.fullmatch(str(value))
    if not match:
        raise ValidationError(f'a day is "MM-DD", got {value!r}', where)
    month, day = int(match[1]), int(match[2])
    try:
        date(_LEAP_YEAR, month, day)
    except ValueError:
        raise ValidationError(f"no such day {value!r}", where) from None
    return month, day


E = TypeVar("E", bound=enum.StrEnum)


def _choice(value: Any, kind: type[E], where: str) -> E:
    try:
        return kind(value)
    except ValueError:
        raise ValidationError(
            f"must be one of {', '.join(k.value for k in kind)}, got {value!r}", where
        ) from None
