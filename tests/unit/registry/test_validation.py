"""Value checks shared by the service, the CSV import and the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from openami.common.errors import ValidationError
from openami.registry.models import AccountKind, MeterRole
from openami.registry.records import clean_meter, clean_service_point, clean_site
from openami.registry.validation import (
    InvalidFieldsError,
    valid_auth_key,
    valid_check_meter_role,
    valid_choice,
    valid_code,
    valid_currency,
    valid_email,
    valid_holiday_country,
    valid_holiday_subdivision,
    valid_installed_at,
    valid_instant,
    valid_int,
    valid_meter_placement,
    valid_phases,
    valid_phone,
    valid_positive,
    valid_profile_interval,
    valid_text,
    valid_timezone,
)

from .helpers import KEY, KEY_HEX


def _fails(check: object, *args: object, field: str, contains: str) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        check(*args)  # type: ignore[operator]
    assert caught.value.location == field
    assert contains in caught.value.message
    return caught.value


@pytest.mark.parametrize("name", ["Africa/Nairobi", "Asia/Shanghai", "UTC", "America/Argentina/Buenos_Aires"])
def test_known_time_zones_pass(name: str) -> None:
    assert valid_timezone(f" {name} ") == name


@pytest.mark.parametrize(
    "name", ["Africa/Nairob", "Nairobi", "localtime", "Factory", "../etc/passwd", "+03:00"]
)
def test_unknown_time_zones_are_refused(name: str) -> None:
    _fails(valid_timezone, name, field="timezone", contains="unknown time zone")


def test_missing_time_zone_is_required() -> None:
    _fails(valid_timezone, "  ", field="timezone", contains="is required")


@pytest.mark.parametrize("code", ["KES", "CNY", "USD", "EUR", "JPY"])
def test_currencies_in_circulation_pass(code: str) -> None:
    assert valid_currency(code) == code


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("kes", "three upper-case letters"),
        ("KESH", "at most 3"),
        ("K1S", "three upper-case"),
        ("XAU", "circulation"),
    ],
)
def test_bad_currencies_are_refused(code: str, message: str) -> None:
    _fails(valid_currency, code, field="currency", contains=message)


def test_holiday_country_must_be_known_to_the_holidays_package() -> None:
    assert valid_holiday_country("KE") == "KE"
    assert valid_holiday_country("CN") == "CN"
    _fails(valid_holiday_country, "ke", field="holiday_country", contains="holidays package")
    _fails(valid_holiday_country, "XX", field="holiday_country", contains="holidays package")
    _fails(valid_holiday_country, "KEN", field="holiday_country", contains="at most 2")


def test_holiday_subdivision_must_belong_to_the_country() -> None:
    assert valid_holiday_subdivision("US", "CA") == "CA"
    assert valid_holiday_subdivision("BR", "São Paulo Capital") == "São Paulo Capital"
    assert valid_holiday_subdivision("KE", "") is None
    assert valid_holiday_subdivision("KE", None) is None
    error = _fails(
        valid_holiday_subdivision, "US", "ZZ", field="holiday_subdivision", contains="not a subdivision"
    )
    assert "CA" in error.message  # lists the valid ones
    _fails(valid_holiday_subdivision, "KE", "CA", field="holiday_subdivision", contains="has none")


@pytest.mark.parametrize("phases", [1, 3, "1", " 3 "])
def test_phases_one_or_three(phases: int | str) -> None:
    assert valid_phases(phases) in (1, 3)


@pytest.mark.parametrize(
    ("phases", "message"), [(2, "1 or 3"), (0, "1 or 3"), ("one", "whole number"), (True, "true")]
)
def test_other_phases_are_refused(phases: object, message: str) -> None:
    _fails(valid_phases, phases, field="phases", contains=message)


def test_whole_numbers() -> None:
    assert valid_int("42", "n") == 42
    assert valid_int(-3, "n") == -3
    for text in ["4.0", "1e3", "1_000", "", "four"]:
        with pytest.raises(ValidationError):
            valid_int(text, "n")


@pytest.mark.parametrize(
    ("value", "message"), [(0, "positive"), (-5, "positive"), ("10001", "implausibly large")]
)
def test_ratings_must_be_positive_and_plausible(value: object, message: str) -> None:
    _fails(valid_positive, value, "rated_current_a", 10_000, field="rated_current_a", contains=message)


def test_profile_interval_must_divide_an_hour() -> None:
    for seconds in (300, 600, 900, 1800, 3600):
        assert valid_profile_interval(seconds) == seconds
    _fails(valid_profile_interval, 1200, field="load_profile_interval_s", contains="one of 300, 600")
    _fails(valid_profile_interval, "60", field="load_profile_interval_s", contains="got 60")


def test_auth_key_is_32_bytes_given_as_bytes_or_64_hex() -> None:
    assert valid_auth_key(KEY) == KEY
    assert valid_auth_key(KEY_HEX.upper()) == KEY
    _fails(valid_auth_key, b"\x00" * 31, field="auth_key", contains="exactly 32 bytes, got 31")
    _fails(valid_auth_key, "ab" * 31, field="auth_key", contains="has 62 characters")
    _fails(valid_auth_key, "zz" * 32, field="auth_key", contains="other than 0-9 and a-f")
    _fails(valid_auth_key, None, field="auth_key", contains="is required")


def test_auth_key_errors_never_echo_the_key() -> None:
    almost = "c0ffee" * 10  # 60 hex characters
    with pytest.raises(ValidationError) as caught:
        valid_auth_key(almost)
    assert "c0ffee" not in str(caught.value)


def test_codes_are_url_safe_and_bounded() -> None:
    assert valid_code("KSM-0001_a.b", "serial", 40) == "KSM-0001_a.b"
    _fails(valid_code, "KSM 0001", "serial", 40, field="serial", contains="only letters")
    _fails(valid_code, "-KSM", "serial", 40, field="serial", contains="start with")
    _fails(valid_code, "K" * 41, "serial", 40, field="serial", contains="41 characters")


def test_text_is_trimmed_and_free_of_control_characters() -> None:
    assert valid_text("  Achieng  ", "name", 200) == "Achieng"
    _fails(valid_text, "a\tb", "name", 200, field="name", contains="control characters")
    _fails(valid_text, "", "name", 200, field="name", contains="is required")


def test_email_and_phone_are_optional_but_shaped() -> None:
    assert valid_email("") is None
    assert valid_email("a@example.org") == "a@example.org"
    _fails(valid_email, "not-an-address", field="email", contains="e-mail")
    assert valid_phone(None) is None
    assert valid_phone("+254 (712) 345-678") == "+254 (712) 345-678"
    _fails(valid_phone, "call me", field="phone", contains="phone number")


def test_instants_must_carry_an_offset_and_come_back_in_utc() -> None:
    assert valid_instant("2025-11-03T09:30:00Z", "installed_at") == datetime(2025, 11, 3, 9, 30, tzinfo=UTC)
    plus3 = datetime(2025, 11, 3, 12, 30, tzinfo=timezone(timedelta(hours=3)))
    assert valid_instant(plus3, "installed_at") == datetime(2025, 11, 3, 9, 30, tzinfo=UTC)
    _fails(valid_instant, "2025-11-03T09:30:00", "installed_at", field="installed_at", contains="UTC offset")
    _fails(valid_instant, "3 Nov 2025", "installed_at", field="installed_at", contains="ISO 8601")


def test_installed_at_not_in_the_future() -> None:
    now = datetime(2026, 3, 2, tzinfo=UTC)
    valid_installed_at(now, now)
    valid_installed_at(None, now)
    _fails(
        valid_installed_at, now + timedelta(seconds=1), now, field="installed_at", contains="in the future"
    )


def test_choices_are_case_insensitive() -> None:
    assert valid_choice(" Prepaid ", AccountKind, "kind") is AccountKind.PREPAID
    assert valid_choice(MeterRole.CHECK, MeterRole, "role") is MeterRole.CHECK
    _fails(valid_choice, "credit", AccountKind, "kind", field="kind", contains="postpaid, prepaid")


def test_check_meter_rules() -> None:
    valid_meter_placement(MeterRole.CUSTOMER, at_service_point=True)
    valid_meter_placement(MeterRole.CHECK, at_service_point=False)
    _fails(
        lambda: valid_meter_placement(MeterRole.CHECK, at_service_point=True),
        field="service_point_id",
        contains="not installed at a service point",
    )
    valid_check_meter_role(MeterRole.CHECK, "M-1")
    _fails(
        valid_check_meter_role, MeterRole.CUSTOMER, "M-1", field="check_meter_id", contains="needs role check"
    )


def test_clean_site_reports_every_wrong_field_at_once() -> None:
    with pytest.raises(InvalidFieldsError) as caught:
        clean_site(code="K SM", name="", timezone="Mars/Olympus", currency="kes", holiday_country="KE")
    locations = [e.location for e in caught.value.errors]
    assert locations == ["code", "name", "timezone", "currency"]
    assert caught.value.location == "code"


def test_clean_site_checks_the_subdivision_only_against_a_valid_country() -> None:
    with pytest.raises(InvalidFieldsError) as caught:
        clean_site(
            code="X", name="X", timezone="UTC", currency="USD", holiday_country="ZZ", holiday_subdivision="CA"
        )
    assert [e.location for e in caught.value.errors] == ["holiday_country"]
    site = clean_site(
        code="X", name="X", timezone="UTC", currency="USD", holiday_country="US", holiday_subdivision="CA"
    )
    assert site.holiday_subdivision == "CA"


def test_clean_meter_defaults() -> None:
    meter = clean_meter(serial="M-1", model="OA", rated_current_a="60", auth_key=KEY_HEX)
    assert (meter.phases, meter.protocol, meter.role, meter.load_profile_interval_s) == (
        1,
        "senml-mqtt",
        MeterRole.CUSTOMER,
        900,
    )
    assert meter.installed_at is None
    assert "auth_key" not in repr(meter)
    assert repr(KEY) not in repr(meter)


def test_clean_service_point_defaults() -> None:
    point = clean_service_point(code="SP-1", rated_current_a=40)
    assert (point.phases, point.address) == (1, "")


def test_invalid_fields_read_well_as_text() -> None:
    with pytest.raises(InvalidFieldsError) as one:
        clean_service_point(code="SP-1", rated_current_a=0)
    assert str(one.value) == "rated_current_a: must be positive, got 0"
    with pytest.raises(InvalidFieldsError) as two:
        clean_service_point(code="", rated_current_a=0)
    assert str(two.value) == "code: is required; rated_current_a: must be positive, got 0"
