"""RFC 6238 codes, the ±1 step window and refusal of a code already used."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pytest

from openami.common.errors import ValidationError
from openami.security.totp import (
    TOTP_STEP_S,
    TotpRefusal,
    new_totp_secret,
    provisioning_uri,
    totp_code,
    totp_time_step,
    verify_totp,
)

# RFC 6238 appendix B: the SHA-1 seed "12345678901234567890"; the 6-digit codes are the last 6 of the 8 listed.
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
AT = datetime(2026, 3, 2, 12, 0, 10, tzinfo=UTC)
STEP = timedelta(seconds=TOTP_STEP_S)


@pytest.mark.parametrize(
    ("unix_s", "code"),
    [(59, "287082"), (1111111109, "081804"), (1234567890, "005924"), (2000000000, "279037")],
)
def test_codes_match_the_rfc_6238_test_vectors(unix_s: int, code: str) -> None:
    assert totp_code(RFC_SECRET, datetime.fromtimestamp(unix_s, tz=UTC)) == code


def test_a_new_secret_is_160_bits_of_base32_and_differs_each_time() -> None:
    secret = new_totp_secret()
    assert len(base64.b32decode(secret)) == 20
    assert secret != new_totp_secret()


def test_the_provisioning_uri_names_account_issuer_and_secret() -> None:
    uri = urlparse(provisioning_uri(RFC_SECRET, "alice", issuer="openami Nairobi"))
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert "alice" in uri.path
    query = parse_qs(uri.query)
    assert query["secret"] == [RFC_SECRET]
    assert query["issuer"] == ["openami Nairobi"]


def test_the_current_code_is_accepted_and_its_step_returned() -> None:
    check = verify_totp(RFC_SECRET, totp_code(RFC_SECRET, AT), AT, None)
    assert check.accepted
    assert check.accepted_step == totp_time_step(AT)
    assert check.refusal is None


@pytest.mark.parametrize("offset", [-1, 1])
def test_one_step_of_drift_either_way_is_accepted(offset: int) -> None:
    code = totp_code(RFC_SECRET, AT + offset * STEP)
    assert verify_totp(RFC_SECRET, code, AT, None).accepted_step == totp_time_step(AT) + offset


@pytest.mark.parametrize("offset", [-2, 2])
def test_two_steps_of_drift_are_refused(offset: int) -> None:
    check = verify_totp(RFC_SECRET, totp_code(RFC_SECRET, AT + offset * STEP), AT, None)
    assert not check.accepted
    assert check.refusal is TotpRefusal.WRONG
    assert check.message == "wrong or expired one-time code"


def test_a_code_is_refused_the_second_time_within_its_window() -> None:
    code = totp_code(RFC_SECRET, AT)
    first = verify_totp(RFC_SECRET, code, AT, None)
    assert first.accepted_step == totp_time_step(AT)
    again = verify_totp(RFC_SECRET, code, AT + STEP, first.accepted_step)
    assert again.refusal is TotpRefusal.REUSED
    assert "already used" in again.message
    later = verify_totp(RFC_SECRET, totp_code(RFC_SECRET, AT + STEP), AT + STEP, first.accepted_step)
    assert later.accepted_step == totp_time_step(AT) + 1


def test_an_older_code_is_refused_once_a_newer_one_was_accepted() -> None:
    newer = verify_totp(RFC_SECRET, totp_code(RFC_SECRET, AT + STEP), AT, None)
    assert newer.accepted_step == totp_time_step(AT) + 1
    older = verify_totp(RFC_SECRET, totp_code(RFC_SECRET, AT), AT, newer.accepted_step)
    assert older.refusal is TotpRefusal.REUSED


def test_a_wrong_code_is_wrong_even_when_nothing_was_used() -> None:
    right = totp_code(RFC_SECRET, AT)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    assert verify_totp(RFC_SECRET, wrong, AT, None).refusal is TotpRefusal.WRONG


def test_spaces_in_a_typed_code_are_ignored() -> None:
    code = totp_code(RFC_SECRET, AT)
    assert verify_totp(RFC_SECRET, f" {code[:3]} {code[3:]} ", AT, None).accepted


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", "١٢٣٤٥٦", "12345x"])
def test_a_code_that_is_not_six_digits_is_malformed(code: str) -> None:
    check = verify_totp(RFC_SECRET, code, AT, None)
    assert check.refusal is TotpRefusal.MALFORMED
    assert check.message == "a one-time code is 6 digits"


def test_a_bad_secret_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="base32") as caught:
        verify_totp("not base32!", "123456", AT, None)
    assert caught.value.location == "totp secret"


def test_a_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_totp(RFC_SECRET, "123456", AT.replace(tzinfo=None), None)
