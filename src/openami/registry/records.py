"""The records of the registry tree as checked values: one `clean_*` function per record type.

Each function checks every field of one record with `registry.validation` and raises `InvalidFieldsError`
listing all that are wrong, so a user fixes a record in one pass. The service, the CSV import and the API all
create records through these. Pure: no session, clock or I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime
from typing import Any, TypeVar

from openami.common.errors import ValidationError
from openami.registry.models import AccountKind, MeterRole
from openami.registry.validation import (
    ADDRESS_LEN,
    MAX_RATED_CURRENT_A,
    MAX_RATING_KVA,
    METER_MODEL_LEN,
    NAME_LEN,
    REFERENCE_LEN,
    SERIAL_LEN,
    SITE_CODE_LEN,
    InvalidFieldsError,
    blank,
    valid_auth_key,
    valid_choice,
    valid_code,
    valid_currency,
    valid_email,
    valid_holiday_country,
    valid_holiday_subdivision,
    valid_instant,
    valid_optional_text,
    valid_phases,
    valid_phone,
    valid_positive,
    valid_profile_interval,
    valid_protocol,
    valid_text,
    valid_timezone,
)

T = TypeVar("T")


class _Collector:
    """Runs field checks, keeping every failure instead of stopping at the first."""

    def __init__(self) -> None:
        self.errors: list[ValidationError] = []

    def __call__(self, check: Callable[..., T], *args: Any) -> T | None:
        try:
            return check(*args)
        except ValidationError as exc:
            self.errors.append(exc)
            return None

    def raise_if_any(self) -> None:
        if self.errors:
            raise InvalidFieldsError(self.errors)


@dataclass(frozen=True, slots=True)
class NewSite:
    code: str
    name: str
    timezone: str
    currency: str
    holiday_country: str
    holiday_subdivision: str | None


@dataclass(frozen=True, slots=True)
class NewCustomer:
    reference: str
    name: str
    email: str | None
    phone: str | None


@dataclass(frozen=True, slots=True)
class NewAccount:
    number: str
    kind: AccountKind


@dataclass(frozen=True, slots=True)
class NewTransformer:
    code: str
    rating_kva: int


@dataclass(frozen=True, slots=True)
class NewServicePoint:
    code: str
    rated_current_a: int
    phases: int
    address: str


@dataclass(frozen=True, slots=True)
class NewMeter:
    serial: str
    model: str
    rated_current_a: int
    auth_key: bytes = dataclass_field(repr=False)
    phases: int
    protocol: str
    role: MeterRole
    load_profile_interval_s: int
    installed_at: datetime | None


def clean_site(
    *,
    code: str | None,
    name: str | None,
    timezone: str | None,
    currency: str | None,
    holiday_country: str | None,
    holiday_subdivision: str | None = None,
) -> NewSite:
    check = _Collector()
    values = {
        "code": check(valid_code, code, "code", SITE_CODE_LEN),
        "name": check(valid_text, name, "name", NAME_LEN),
        "timezone": check(valid_timezone, timezone),
        "currency": check(valid_currency, currency),
        "holiday_country": check(valid_holiday_country, holiday_country),
    }
    country = values["holiday_country"]
    # A subdivision can only be judged against a valid country; a bad country is already reported.
    values["holiday_subdivision"] = (
        check(valid_holiday_subdivision, country, holiday_subdivision) if country is not None else None
    )
    check.raise_if_any()
    return NewSite(**values)  # type: ignore[arg-type]  # every value is checked and set when no error was raised


def clean_customer(
    *, reference: str | None, name: str | None, email: str | None = None, phone: str | None = None
) -> NewCustomer:
    check = _Collector()
    values = {
        "reference": check(valid_text, reference, "reference", REFERENCE_LEN),
        "name": check(valid_text, name, "name", NAME_LEN),
        "email": check(valid_email, email),
        "phone": check(valid_phone, phone),
    }
    check.raise_if_any()
    return NewCustomer(**values)  # type: ignore[arg-type]  # see clean_site


def clean_account(*, number: str | None, kind: AccountKind | str | None) -> NewAccount:
    check = _Collector()
    values = {
        "number": check(valid_text, number, "number", REFERENCE_LEN),
        "kind": check(valid_choice, kind, AccountKind, "kind"),
    }
    check.raise_if_any()
    return NewAccount(**values)  # type: ignore[arg-type]  # see clean_site


def clean_transformer(*, code: str | None, rating_kva: int | str | None) -> NewTransformer:
    check = _Collector()
    values = {
        "code": check(valid_code, code, "code", REFERENCE_LEN),
        "rating_kva": check(valid_positive, rating_kva, "rating_kva", MAX_RATING_KVA),
    }
    check.raise_if_any()
    return NewTransformer(**values)  # type: ignore[arg-type]  # see clean_site


def clean_service_point(
    *,
    code: str | None,
    rated_current_a: int | str | None,
    phases: int | str | None = None,
    address: str | None = None,
) -> NewServicePoint:
    """A service point; `phases` defaults to 1 and `address` to empty."""
    check = _Collector()
    values = {
        "code": check(valid_code, code, "code", REFERENCE_LEN),
        "rated_current_a": check(valid_positive, rated_current_a, "rated_current_a", MAX_RATED_CURRENT_A),
        "phases": 1 if blank(phases) else check(valid_phases, phases),
        "address": check(valid_optional_text, address, "address", ADDRESS_LEN) or "",
    }
    check.raise_if_any()
    return NewServicePoint(**values)  # type: ignore[arg-type]  # see clean_site


def clean_meter(
    *,
    serial: str | None,
    model: str | None,
    rated_current_a: int | str | None,
    auth_key: bytes | str | None,
    phases: int | str | None = None,
    protocol: str | None = None,
    role: MeterRole | str | None = None,
    load_profile_interval_s: int | str | None = None,
    installed_at: datetime | str | None = None,
) -> NewMeter:
    """A meter. Defaults: 1 phase, protocol 'senml-mqtt', role customer, 900 s load profile, not installed."""
    check = _Collector()
    values = {
        "serial": check(valid_code, serial, "serial", SERIAL_LEN),
        "model": check(valid_text, model, "model", METER_MODEL_LEN),
        "rated_current_a": check(valid_positive, rated_current_a, "rated_current_a", MAX_RATED_CURRENT_A),
        "auth_key": check(valid_auth_key, auth_key),
        "phases": 1 if blank(phases) else check(valid_phases, phases),
        "protocol": "senml-mqtt" if blank(protocol) else check(valid_protocol, protocol),
        "role": MeterRole.CUSTOMER if blank(role) else check(valid_choice, role, MeterRole, "role"),
        "load_profile_interval_s": 900
        if blank(load_profile_interval_s)
        else check(valid_profile_interval, load_profile_interval_s),
        "installed_at": None if blank(installed_at) else check(valid_instant, installed_at, "installed_at"),
    }
    check.raise_if_any()
    return NewMeter(**values)  # type: ignore[arg-type]  # see clean_site
