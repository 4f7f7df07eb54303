"""The pure core: which rules fire, dedupe keys, templates in both languages, quiet hours, backoff."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from openami.notifications.interfaces import (
    Disconnected,
    DisconnectWarning,
    Language,
    LowBalance,
    PaymentReceived,
    Preferences,
    Reconnected,
    Rule,
)
from openami.notifications.rules import RetryPolicy, evaluate, format_money, release_at, render
from openami.notifications.templates import TEMPLATES

NAIROBI = ZoneInfo("Africa/Nairobi")  # UTC+3, no DST
AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def low(balance_minor: int, days_left: str | None, episode: str = "topup-7") -> LowBalance:
    return LowBalance(1, balance_minor, "KES", None if days_left is None else Decimal(days_left), episode, AT)


def test_low_balance_fires_by_amount_and_by_days_separately() -> None:
    prefs = Preferences(1, low_balance_minor=50_00, low_balance_days=3)
    assert [n.rule for n in evaluate(low(60_00, "5"), prefs, "A1", NAIROBI)] == []
    assert [n.rule for n in evaluate(low(50_00, "5"), prefs, "A1", NAIROBI)] == [Rule.LOW_BALANCE_AMOUNT]
    assert [n.rule for n in evaluate(low(90_00, "2.96"), prefs, "A1", NAIROBI)] == [Rule.LOW_BALANCE_DAYS]
    both = evaluate(low(10_00, "0.5"), prefs, "A1", NAIROBI)
    assert [n.rule for n in both] == [Rule.LOW_BALANCE_AMOUNT, Rule.LOW_BALANCE_DAYS]
    assert [n.dedupe_key for n in both] == ["low_balance_amount:1:topup-7", "low_balance_days:1:topup-7"]
    assert not any(n.urgent for n in both)


def test_thresholds_of_none_turn_rules_off_and_unknown_days_never_fire() -> None:
    off = Preferences(1, low_balance_minor=None, low_balance_days=None)
    assert evaluate(low(0, "0"), off, "A1", NAIROBI) == []
    assert evaluate(low(100, None), Preferences(1), "A1", NAIROBI) == []  # default: days only


def test_each_event_fires_its_rule_with_its_episode() -> None:
    prefs = Preferences(1)
    cutoff = AT + timedelta(hours=5)
    warning = evaluate(DisconnectWarning(1, 120, "KES", cutoff, "plan-3", AT), prefs, "A1", NAIROBI)
    assert [(n.rule, n.urgent, n.expires_at, n.episode) for n in warning] == [
        (Rule.DISCONNECT_WARNING, True, cutoff, "plan-3")
    ]
    assert warning[0].fields["cutoff"] == "2026-03-02 17:00"  # 14:00 UTC in Nairobi
    (cut,) = evaluate(Disconnected(1, -5, "KES", "cmd-9", AT), prefs, "A1", NAIROBI)
    assert (cut.rule, cut.urgent, cut.dedupe_key) == (Rule.DISCONNECTED, True, "disconnected:1:cmd-9")
    (back,) = evaluate(Reconnected(1, 900, "KES", "cmd-10", AT), prefs, "A1", NAIROBI)
    assert (back.rule, back.urgent) == (Rule.RECONNECTED, False)
    (paid,) = evaluate(PaymentReceived(1, 1000_00, 995_00, "KES", "pi_42", AT), prefs, "A1", NAIROBI)
    assert paid.dedupe_key == "payment_received:1:pi_42"
    assert paid.data == {
        "type": "PaymentReceived",
        "account_id": 1,
        "amount_minor": 100000,
        "balance_minor": 99500,
        "currency": "KES",
        "payment_id": "pi_42",
        "occurred_at": "2026-03-02T09:00:00+00:00",
    }


def test_templates_render_in_english_and_chinese_with_money_formatted() -> None:
    (paid,) = evaluate(PaymentReceived(1, 1000_00, 995_50, "KES", "pi_42", AT), Preferences(1), "A1", NAIROBI)
    subject, body = render(paid, Language.ENGLISH)
    assert subject == "Payment of KES 1,000.00 received for account A1"
    assert "KES 995.50" in body
    assert "pi_42" in body
    subject_zh, body_zh = render(paid, Language.SIMPLIFIED_CHINESE)
    assert subject_zh == "账户 A1 已收到付款 KES 1,000.00"
    assert "当前余额为 KES 995.50" in body_zh


def test_every_rule_has_both_languages() -> None:
    assert set(TEMPLATES) == set(Rule)
    assert all(set(by_language) == set(Language) for by_language in TEMPLATES.values())


def test_money_uses_the_currencys_minor_digits() -> None:
    assert format_money(123456, "KES") == "KES 1,234.56"
    assert format_money(1500, "JPY") == "JPY 1,500"
    assert format_money(-1234, "KWD") == "KWD -1.234"


def test_quiet_hours_hold_non_urgent_messages_until_they_end_locally() -> None:
    start, end = time(22, 0), time(7, 0)
    late = datetime(2026, 3, 2, 20, 30, tzinfo=UTC)  # 23:30 in Nairobi: quiet until 07:00 local = 04:00 UTC
    assert release_at(late, False, start, end, NAIROBI) == datetime(2026, 3, 3, 4, 0, tzinfo=UTC)
    early = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # 05:00 local, after midnight: same morning
    assert release_at(early, False, start, end, NAIROBI) == datetime(2026, 3, 2, 4, 0, tzinfo=UTC)
    day = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # 12:00 local
    assert release_at(day, False, start, end, NAIROBI) == day
    assert release_at(late, True, start, end, NAIROBI) == late  # urgent: never held
    assert release_at(late, False, None, None, NAIROBI) == late


def test_quiet_hours_within_one_day() -> None:
    lunch = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # 13:00 local, quiet 12:00-14:00
    assert release_at(lunch, False, time(12), time(14), NAIROBI) == datetime(2026, 3, 2, 11, 0, tzinfo=UTC)
    assert release_at(lunch, False, time(14), time(16), NAIROBI) == lunch


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = RetryPolicy(first_delay=timedelta(seconds=30), max_delay=timedelta(minutes=5), max_attempts=5)
    assert [policy.delay(n).total_seconds() for n in range(1, 7)] == [30, 60, 120, 240, 300, 300]
    with pytest.raises(ValueError, match="counts from 1"):
        policy.delay(0)
