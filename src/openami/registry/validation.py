"""Validation of registry values, shared by the service, the CSV import and the API.

Pure: no session, clock or I/O beyond the read-only time-zone and holiday catalogues. Each `valid_*`
function returns the cleaned value or raises `ValidationError` whose `location` is the field name; the
`clean_*` functions of `registry.records` combine them per record type.

Values may arrive typed (from Python callers and the API) or as text (from CSV cells); integers, keys and
instants accept both, and an empty string counts as missing.
"""

from __future__ import annotations

import enum
import functools
import re
import zoneinfo
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import holidays

from openami.common.errors import ValidationError
from openami.registry.models import MeterRole

AUTH_KEY_BYTES = 32
# How long a meter's previous key may stay valid after a rotation: long enough to re-key meters in the field,
# short enough that a retired key does not linger.
MAX_KEY_GRACE = timedelta(days=90)
PROFILE_INTERVALS_S = (300, 600, 900, 1800, 3600)
PHASES = (1, 3)
# Upper bounds that no real service or distribution transformer reaches; they catch typos (extra zeros)
# and keep values inside a 32-bit integer column.
MAX_RATED_CURRENT_A = 10_000
MAX_RATING_KVA = 100_000

# Column lengths of the registry tables (models.py): checked here so PostgreSQL never refuses a value.
SITE_CODE_LEN = 40
NAME_LEN = 200
REFERENCE_LEN = 60
EMAIL_LEN = 254
PHONE_LEN = 32
ADDRESS_LEN = 300
SERIAL_LEN = 40
METER_MODEL_LEN = 80
PROTOCOL_LEN = 20

# ISO 4217 codes of currencies in circulation (funds, precious metals and test codes are left out:
# nobody is billed in them).
ISO_4217_CURRENCIES = frozenset(
    (  # noqa: SIM905  (a block of codes reads and diffs better than 160 quoted strings)
        "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL "
        "BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUC CUP CVE CZK DJF DKK DOP DZD "
        "EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS "
        "INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD "
        "LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK "
        "NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK "
        "SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS "
        "UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG ZWL "
    ).split()
)

# Names a tz database installs that are not places: the host's own zone and the tzdata build placeholders.
_NOT_PLACES = frozenset({"localtime", "Factory", "posixrules"})
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WHOLE_NUMBER = re.compile(r"-?[0-9]+")
_HEX_KEY = re.compile(rf"[0-9a-fA-F]{{{2 * AUTH_KEY_BYTES}}}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE = re.compile(r"\+?[0-9][0-9 ()-]*")
_PROTOCOL = re.compile(r"[a-z0-9][a-z0-9-]*")

E = TypeVar("E", bound=enum.Enum)


class InvalidFieldsError(ValidationError):
    """Fields of one record are wrong: `errors` holds one ValidationError per field, `location` the first."""

    def __init__(self, errors: list[ValidationError]) -> None:
        self.errors = errors
        first = errors[0]
        if len(errors) == 1:
            summary = first.message
        else:
            summary = "; ".join(f"{e.location}: {e.message}" if e.location else e.message for e in errors)
        super().__init__(summary, location=first.location)

    def __str__(self) -> str:
        # Several errors each name their own field; one error reads "field: message" like any ValidationError.
        return self.message if len(self.errors) > 1 else super().__str__()


def blank(value: object) -> bool:
    """None, or text that is empty once trimmed: a value not given."""
    return value is None or (isinstance(value, str) and not value.strip())


def _required(value: object, field: str) -> None:
    if blank(value):
        raise ValidationError("is required", location=field)


def valid_text(value: str | None, field: str, max_length: int) -> str:
    """Free text (names, references, addresses): trimmed, not empty, no control characters, not too long."""
    if value is None or not value.strip():
        raise ValidationError("is required", location=field)
    text = value.strip()
    if _CONTROL.search(text):
        raise ValidationError("must not contain control characters (tabs, line breaks ...)", location=field)
    if len(text) > max_length:
        raise ValidationError(
            f"is {len(text)} characters long; at most {max_length} are allowed", location=field
        )
    return text


def valid_optional_text(value: str | None, field: str, max_length: int) -> str | None:
    return None if blank(value) else valid_text(value, field, max_length)


def valid_code(value: str | None, field: str, max_length: int) -> str:
    """An identifier used in URLs and files (site code, serial ...): letters, digits, '.', '_', '-'."""
    text = valid_text(value, field, max_length)
    if not _CODE.fullmatch(text):
        raise ValidationError(
            f"{text!r} may contain only letters, digits, '.', '_' and '-', "
            "and must start with a letter or digit",
            location=field,
        )
    return text


@functools.cache
def _known_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones() - _NOT_PLACES)


def valid_timezone(value: str | None, field: str = "timezone") -> str:
    """An IANA time-zone name known to this machine's tz database, e.g. 'Africa/Nairobi'."""
    name = valid_text(value, field, 64)
    if name not in _known_timezones():
        raise ValidationError(
            f"unknown time zone {name!r}; use an IANA name such as 'Africa/Nairobi'", location=field
        )
    return name


def valid_currency(value: str | None, field: str = "currency") -> str:
    """An ISO 4217 code of a currency in circulation, in upper case, e.g. 'KES'."""
    code = valid_text(value, field, 3)
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise ValidationError(
            f"{code!r} is not an ISO 4217 code (three upper-case letters, e.g. 'KES')", location=field
        )
    if code not in ISO_4217_CURRENCIES:
        raise ValidationError(f"{code!r} is not an ISO 4217 currency in circulation", location=field)
    return code


@functools.cache
def _holiday_calendars() -> dict[str, list[str]]:
    return holidays.list_supported_countries(include_aliases=False)


def valid_holiday_country(value: str | None, field: str = "holiday_country") -> str:
    """An ISO 3166-1 alpha-2 country the `holidays` package has a calendar for, e.g. 'KE'."""
    code = valid_text(value, field, 2)
    if code not in _holiday_calendars():
        raise ValidationError(
            f"{code!r} is not a country the holidays package knows "
            "(use an upper-case ISO 3166-1 alpha-2 code, e.g. 'KE')",
            location=field,
        )
    return code


def valid_holiday_subdivision(
    country: str, value: str | None, field: str = "holiday_subdivision"
) -> str | None:
    """Empty, or one of the subdivisions the `holidays` package lists for `country` (e.g. 'CA' for 'US')."""
    if blank(value):
        return None
    subdivision = valid_text(value, field, 40)
    known = _holiday_calendars().get(country, [])
    if subdivision not in known:
        hint = f"one of {', '.join(known)}" if known else "empty: this country has none"
        raise ValidationError(
            f"{subdivision!r} is not a subdivision of {country}; use {hint}", location=field
        )
    return subdivision


def valid_int(value: int | str | None, field: str) -> int:
    """A whole number, given as an int or as decimal text."""
    _required(value, field)
    if isinstance(value, bool):
        raise ValidationError("must be a whole number, not true/false", location=field)
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if not _WHOLE_NUMBER.fullmatch(text):
        raise ValidationError(f"{text!r} is not a whole number", location=field)
    return int(text)


def valid_positive(value: int | str | None, field: str, maximum: int) -> int:
    number = valid_int(value, field)
    if number <= 0:
        raise ValidationError(f"must be positive, got {number}", location=field)
    if number > maximum:
        raise ValidationError(f"{number} is implausibly large; at most {maximum} is allowed", location=field)
    return number


def valid_phases(value: int | str | None, field: str = "phases") -> int:
    number = valid_int(value, field)
    if number not in PHASES:
        raise ValidationError(f"must be 1 or 3, got {number}", location=field)
    return number


def valid_profile_interval(value: int | str | None, field: str = "load_profile_interval_s") -> int:
    """A load-profile capture period in seconds that divides an hour evenly."""
    seconds = valid_int(value, field)
    if seconds not in PROFILE_INTERVALS_S:
        allowed = ", ".join(str(s) for s in PROFILE_INTERVALS_S)
        raise ValidationError(f"must be one of {allowed} seconds, got {seconds}", location=field)
    return seconds


def valid_auth_key(value: bytes | str | None, field: str = "auth_key") -> bytes:
    """The meter's 32-byte HMAC key, as bytes or as 64 hexadecimal characters.

    Messages describe the shape of a wrong key, never its content, so errors can be logged and shown safely.
    """
    _required(value, field)
    if isinstance(value, bytes | bytearray):
        if len(value) != AUTH_KEY_BYTES:
            raise ValidationError(f"must be exactly {AUTH_KEY_BYTES} bytes, got {len(value)}", location=field)
        return bytes(value)
    text = str(value).strip()
    if not _HEX_KEY.fullmatch(text):
        detail = (
            "contains characters other than 0-9 and a-f"
            if re.search(r"[^0-9a-fA-F]", text)
            else f"has {len(text)} characters"
        )
        raise ValidationError(
            f"must be {2 * AUTH_KEY_BYTES} hexadecimal characters ({AUTH_KEY_BYTES} bytes); "
            f"the value given {detail}",
            location=field,
        )
    return bytes.fromhex(text)


def valid_key_grace(value: timedelta, field: str = "grace") -> timedelta:
    """How long a rotated-out meter key stays valid: from zero (refused at once) to MAX_KEY_GRACE."""
    if not isinstance(value, timedelta):
        raise ValidationError(f"must be a duration, got {type(value).__name__}", location=field)
    if not timedelta(0) <= value <= MAX_KEY_GRACE:
        raise ValidationError(f"must be between 0 and {MAX_KEY_GRACE.days} days, got {value}", location=field)
    return value


def valid_instant(value: datetime | str | None, field: str) -> datetime:
    """A timezone-aware instant (a datetime, or ISO 8601 text with an offset such as 'Z'), returned in UTC."""
    _required(value, field)
    if isinstance(value, datetime):
        instant = value
    else:
        text = str(value).strip()
        try:
            instant = datetime.fromisoformat(text)
        except ValueError:
            raise ValidationError(
                f"{text!r} is not an ISO 8601 date and time, e.g. 2025-01-15T08:00:00Z", location=field
            ) from None
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValidationError("must include a UTC offset, e.g. 2025-01-15T08:00:00Z", location=field)
    return instant.astimezone(UTC)


def valid_choice(value: E | str | None, choices: type[E], field: str) -> E:
    """A member of the string enum `choices`, given as the member or its (case-insensitive) value."""
    _required(value, field)
    if isinstance(value, choices):
        return value
    text = str(value).strip().lower()
    for member in choices:
        if member.value == text:
            return member
    allowed = ", ".join(str(m.value) for m in choices)
    raise ValidationError(f"{text!r} is not one of {allowed}", location=field)


def valid_email(value: str | None, field: str = "email") -> str | None:
    address = valid_optional_text(value, field, EMAIL_LEN)
    if address is not None and not _EMAIL.fullmatch(address):
        raise ValidationError(f"{address!r} is not an e-mail address", location=field)
    return address


def valid_phone(value: str | None, field: str = "phone") -> str | None:
    number = valid_optional_text(value, field, PHONE_LEN)
    if number is not None and not _PHONE.fullmatch(number):
        raise ValidationError(
            f"{number!r} is not a phone number (digits, spaces, '-', '(', ')', optionally a leading '+')",
            location=field,
        )
    return number


def valid_protocol(value: str | None, field: str = "protocol") -> str:
    name = valid_text(value, field, PROTOCOL_LEN)
    if not _PROTOCOL.fullmatch(name):
        raise ValidationError(
            f"{name!r} is not a protocol name (lower-case letters, digits and '-', e.g. 'senml-mqtt')",
            location=field,
        )
    return name


def valid_meter_placement(
    role: MeterRole, *, at_service_point: bool, field: str = "service_point_id"
) -> None:
    """A check meter measures a transformer's total, so it is never installed at a service point."""
    if role == MeterRole.CHECK and at_service_point:
        raise ValidationError(
            "a check meter measures a transformer and is not installed at a service point", location=field
        )


def valid_installed_at(installed_at: datetime | None, now: datetime, field: str = "installed_at") -> None:
    """An installation instant must not lie after `now` (UTC)."""
    if installed_at is not None and installed_at > now:
        raise ValidationError(
            f"{installed_at.isoformat()} is in the future (now is {now.isoformat()})", location=field
        )


def valid_check_meter_role(role: MeterRole, serial: str, field: str = "check_meter_id") -> None:
    """Only a meter of role check can measure a transformer's total."""
    if role != MeterRole.CHECK:
        raise ValidationError(
            f"meter {serial!r} has role {MeterRole(role).value}; a check meter needs role check",
            location=field,
        )
