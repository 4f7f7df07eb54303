"""The meter's token keypad: each genuine token once, replays, other meters' tokens and garbage refused.

Tokens are made here with openpaygo's own encoder, as the platform makes them (prepayment.tokens)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from openpaygo import OpenPAYGOTokenEncoder, TokenType  # type: ignore[import-untyped]

from openami.device import Meter, MeterConfig
from openami.device.tokens import (
    MAX_UNUSED_OLDER_TOKENS,
    CreditKind,
    RejectReason,
    TokenConfig,
    TokenKind,
    TokenRegister,
)
from tests.unit.device.support import MONDAY

KEY = bytes(range(16))
OTHER_KEY = bytes(range(16, 32))
STARTING_CODE = 123_456_789
UNIT_WH = 100  # one token unit = 100 Wh


class Issuer:
    """The platform's side in miniature: a counter that only goes up."""

    def __init__(self, key: bytes = KEY, starting_code: int = STARTING_CODE) -> None:
        self.key, self.starting_code, self.count = key, starting_code, 1

    def make(self, token_type: int, value: int | None = None) -> str:
        self.count, token = OpenPAYGOTokenEncoder.generate_token(
            secret_key=self.key.hex(),
            count=self.count,
            value=value,
            token_type=token_type,
            starting_code=self.starting_code,
        )
        return str(token)

    def add(self, value: int) -> str:
        return self.make(TokenType.ADD_TIME, value)


def config(key: bytes = KEY, starting_code: int = STARTING_CODE) -> TokenConfig:
    return TokenConfig(key, starting_code, CreditKind.ENERGY, UNIT_WH)


@pytest.fixture
def keypad() -> TokenRegister:
    return TokenRegister(config())


def test_a_token_adds_exactly_its_value_once(keypad: TokenRegister) -> None:
    token = Issuer().add(25)
    first = keypad.enter(token, MONDAY)
    assert first.accepted
    assert first.event.kind is TokenKind.ADD
    assert first.event.count == 2
    assert keypad.credit == 25 * UNIT_WH
    second = keypad.enter(token, MONDAY + timedelta(minutes=1))
    assert not second.accepted
    assert second.reason is RejectReason.ALREADY_USED
    assert keypad.credit == 25 * UNIT_WH


def test_tokens_in_order_add_up(keypad: TokenRegister) -> None:
    issuer = Issuer()
    for value in (1, 10, 995):
        assert keypad.enter(issuer.add(value), MONDAY).accepted
    assert keypad.credit == (1 + 10 + 995) * UNIT_WH


def test_a_token_for_another_meter_is_refused(keypad: TokenRegister) -> None:
    # The last 3 digits of a starting code only offset the value (OpenPAYGo puts the value there), so the
    # other starting code differs above them; the platform draws key and starting code at random anyway.
    others = (Issuer(key=OTHER_KEY), Issuer(starting_code=STARTING_CODE + 1_000))
    for day, other in enumerate(others, 1):
        result = keypad.enter(other.add(50), MONDAY + timedelta(days=day))  # after the lockout
        assert not result.accepted
        assert result.reason is RejectReason.INVALID
        assert keypad.credit == 0


@pytest.mark.parametrize(
    "garbage", ["", "12345678", "1234567890", "12345678a", " 12345678", "１２３４５６７８９"]
)
def test_malformed_entries_are_refused(keypad: TokenRegister, garbage: str) -> None:
    result = keypad.enter(garbage, MONDAY)
    assert result.reason is RejectReason.MALFORMED
    assert keypad.credit == 0


def test_a_mistyped_token_is_invalid_and_locks_the_keypad(keypad: TokenRegister) -> None:
    issuer = Issuer()
    good = issuer.add(30)
    mistyped = good[:-1] + str((int(good[-1]) + 1) % 10)
    assert keypad.enter(mistyped, MONDAY).reason is RejectReason.INVALID
    assert keypad.locked_until == MONDAY + timedelta(minutes=2)
    # While locked even a genuine token waits; the lock grows with each invalid token in a row.
    assert keypad.enter(good, MONDAY + timedelta(minutes=1)).reason is RejectReason.LOCKED_OUT
    assert keypad.enter(mistyped, MONDAY + timedelta(minutes=2)).reason is RejectReason.INVALID
    assert keypad.locked_until == MONDAY + timedelta(minutes=6)
    assert keypad.enter(good, MONDAY + timedelta(minutes=6)).accepted
    assert keypad.locked_until is None
    assert keypad.credit == 30 * UNIT_WH


def test_out_of_order_tokens_within_the_window_are_accepted_once(keypad: TokenRegister) -> None:
    issuer = Issuer()
    tokens = [issuer.add(n) for n in range(1, 6)]  # counts 2, 4, 6, 8, 10
    for token in reversed(tokens):
        assert keypad.enter(token, MONDAY).accepted
    assert keypad.credit == sum(range(1, 6)) * UNIT_WH
    for token in tokens:
        assert keypad.enter(token, MONDAY).reason is RejectReason.ALREADY_USED
    assert keypad.credit == sum(range(1, 6)) * UNIT_WH


def test_tokens_older_than_the_window_are_refused(keypad: TokenRegister) -> None:
    issuer = Issuer()
    tokens = [issuer.add(1) for _ in range(20)]  # counts 2, 4, ..., 40
    assert keypad.enter(tokens[-1], MONDAY).accepted  # count 40
    window_floor = 40 - MAX_UNUSED_OLDER_TOKENS  # 24: counts above it are still in the window
    inside = [t for t, count in zip(tokens, range(2, 41, 2), strict=True) if window_floor < count < 40]
    outside = [t for t, count in zip(tokens, range(2, 41, 2), strict=True) if count <= window_floor]
    assert len(inside) == 7
    assert len(outside) == 12
    for token in outside:
        assert keypad.enter(token, MONDAY).reason is RejectReason.ALREADY_USED
    for token in inside:
        assert keypad.enter(token, MONDAY).accepted
    assert keypad.credit == (1 + len(inside)) * UNIT_WH


def test_a_set_token_closes_the_window_behind_it(keypad: TokenRegister) -> None:
    issuer = Issuer()
    skipped = issuer.add(7)  # count 2, not typed before the set token
    set_token = issuer.make(TokenType.SET_TIME, 40)  # count 3
    result = keypad.enter(set_token, MONDAY)
    assert result.accepted
    assert result.event.kind is TokenKind.SET
    assert keypad.credit == 40 * UNIT_WH
    assert keypad.enter(skipped, MONDAY).reason is RejectReason.ALREADY_USED
    assert keypad.credit == 40 * UNIT_WH


def test_set_replaces_the_credit_and_disable_turns_prepayment_off(keypad: TokenRegister) -> None:
    issuer = Issuer()
    assert keypad.enter(issuer.add(100), MONDAY).accepted
    result = keypad.enter(issuer.make(TokenType.SET_TIME, 10), MONDAY)
    assert result.event.credit_change == -90 * UNIT_WH
    assert keypad.credit == 10 * UNIT_WH
    disabled = keypad.enter(issuer.make(TokenType.DISABLE_PAYG), MONDAY)
    assert disabled.event.kind is TokenKind.DISABLE
    assert not keypad.prepayment_enabled
    assert keypad.enter(issuer.make(TokenType.SET_TIME, 5), MONDAY).accepted
    assert keypad.prepayment_enabled
    assert keypad.credit == 5 * UNIT_WH


def test_money_credit_is_in_minor_units() -> None:
    keypad = TokenRegister(TokenConfig(KEY, STARTING_CODE, CreditKind.MONEY, 100))
    assert keypad.enter(Issuer().add(12), MONDAY).accepted
    assert keypad.credit == 1_200
    assert keypad.credit_kind is CreditKind.MONEY


def test_every_entry_is_logged_without_its_digits(keypad: TokenRegister) -> None:
    issuer = Issuer()
    token = issuer.add(3)
    keypad.enter(token, MONDAY)
    keypad.enter(token, MONDAY + timedelta(seconds=5))
    keypad.enter("999", MONDAY + timedelta(seconds=9))
    events = keypad.events_since(0)
    assert [(e.sequence, e.accepted, e.reason) for e in events] == [
        (1, True, None),
        (2, False, RejectReason.ALREADY_USED),
        (3, False, RejectReason.MALFORMED),
    ]
    assert events[0].credit_change == 300
    assert events[0].credit_after == 300
    assert all(token not in repr(e) for e in events)
    assert keypad.events_since(2) == events[2:]


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        TokenConfig(bytes(32), STARTING_CODE, CreditKind.ENERGY, 1)
    with pytest.raises(ValueError, match="starting_code"):
        TokenConfig(KEY, 1_000_000_000, CreditKind.ENERGY, 1)
    with pytest.raises(ValueError, match="unit_size"):
        TokenConfig(KEY, STARTING_CODE, CreditKind.ENERGY, 0)
    assert "00010203" not in repr(config())


def test_the_meter_holds_the_register_and_stamps_by_its_clock() -> None:
    meter = Meter(MeterConfig("DEV-TOK", clock_drift_ppm=0.0), MONDAY)
    assert meter.tokens is None
    with pytest.raises(ValueError, match="not provisioned"):
        meter.enter_token(MONDAY, "123456789")
    meter.provision_tokens(config())
    with pytest.raises(ValueError, match="already provisioned"):
        meter.provision_tokens(config())
    result = meter.enter_token(MONDAY + timedelta(hours=1), Issuer().add(9))
    assert result.accepted
    assert result.event.occurred_at == MONDAY + timedelta(hours=1)
    assert meter.tokens is not None
    assert meter.tokens.credit == 900


def test_a_powered_down_meter_takes_no_token() -> None:
    from openami.device import PoweredDownError

    meter = Meter(MeterConfig("DEV-TOK2"), MONDAY)
    meter.provision_tokens(config())
    meter.power_down(MONDAY + timedelta(minutes=1))
    with pytest.raises(PoweredDownError):
        meter.enter_token(MONDAY + timedelta(minutes=2), Issuer().add(1))
    assert meter.tokens is not None
    assert meter.tokens.last_sequence == 0
