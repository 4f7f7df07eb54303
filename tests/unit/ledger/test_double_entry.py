"""The pure double-entry core: the chart of accounts, journal checks, reversals and balances."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from openami.common.errors import ValidationError
from openami.ledger.double_entry import (
    CHART_OF_ACCOUNTS,
    MAX_AMOUNT_MINOR,
    account_code,
    balances,
    check_accounts,
    check_postings,
    journal_problem,
    kind_of,
    reversal_of,
    reversal_problem,
    same_postings,
    valid_currency,
    valid_purpose,
)
from openami.ledger.interfaces import AccountKind, AccountPurpose, LedgerAccountInfo, NewPosting


def test_every_purpose_has_a_kind_and_export_credit_is_contra_revenue() -> None:
    assert set(CHART_OF_ACCOUNTS) == set(AccountPurpose)
    assert kind_of(AccountPurpose.RECEIVABLE) is AccountKind.ASSET
    assert kind_of(AccountPurpose.PREPAYMENT) is AccountKind.LIABILITY
    assert kind_of(AccountPurpose.TAX_PAYABLE) is AccountKind.LIABILITY
    assert kind_of(AccountPurpose.CASH) is AccountKind.ASSET
    assert kind_of(AccountPurpose.EXPORT_CREDIT) is AccountKind.REVENUE
    assert kind_of(AccountPurpose.BAD_DEBT) is AccountKind.EXPENSE
    assert kind_of(AccountPurpose.OPENING_BALANCE) is AccountKind.EQUITY
    assert {kind for kind, _ in CHART_OF_ACCOUNTS.values()} == set(AccountKind)


@pytest.mark.parametrize(
    ("purpose", "customer_account_id", "name", "code"),
    [
        (AccountPurpose.RECEIVABLE, 17, None, "receivable/account-17"),
        (AccountPurpose.PREPAYMENT, 17, None, "prepayment/account-17"),
        (AccountPurpose.CASH, None, "mpesa", "cash/mpesa"),
        (AccountPurpose.TAX_PAYABLE, None, "VAT", "tax_payable/VAT"),
        (AccountPurpose.REVENUE_ENERGY, None, None, "revenue.energy"),
        (AccountPurpose.EXPORT_CREDIT, None, None, "revenue.export_credit"),
    ],
)
def test_account_codes(
    purpose: AccountPurpose, customer_account_id: int | None, name: str | None, code: str
) -> None:
    assert account_code(purpose, customer_account_id, name) == code


@pytest.mark.parametrize(
    ("purpose", "customer_account_id", "name", "message"),
    [
        (AccountPurpose.RECEIVABLE, None, None, "kept per customer account: give its id, got None"),
        (AccountPurpose.RECEIVABLE, 3, "x", "a receivable account takes no name"),
        (AccountPurpose.CASH, None, None, "must be a string, got None"),
        (AccountPurpose.CASH, None, "m pesa", "'m pesa': a cash account's name (its payment provider)"),
        (AccountPurpose.TAX_PAYABLE, None, "a/b", "(its tax) is letters, digits"),
        (AccountPurpose.REVENUE_FIXED, 3, None, "a revenue.fixed account is not kept per customer account"),
        (AccountPurpose.CASH, None, "x" * 61, "longer than 60 characters"),
    ],
)
def test_account_code_refuses_wrong_qualifiers(
    purpose: AccountPurpose, customer_account_id: int | None, name: str | None, message: str
) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        account_code(purpose, customer_account_id, name)


def test_purpose_and_currency_validation() -> None:
    assert valid_purpose("cash") is AccountPurpose.CASH
    with pytest.raises(
        ValidationError, match=r"purpose: 'till' is not a ledger account purpose \(one of: receivable"
    ):
        valid_purpose("till")
    assert valid_currency("KES") == "KES"
    for bad in ("kes", "KE", "KESH", None, 1):
        with pytest.raises(ValidationError, match="is not an ISO 4217 currency code"):
            valid_currency(bad)


def test_check_postings_accepts_a_balanced_journal() -> None:
    assert check_postings([(1, 150), (2, -100), (3, -50)]) == (
        NewPosting(1, 150),
        NewPosting(2, -100),
        NewPosting(3, -50),
    )


@pytest.mark.parametrize(
    ("postings", "message"),
    [
        ([], "journal: a journal needs at least two postings, got 0"),
        ([(1, 100)], "journal: a journal needs at least two postings, got 1"),
        (
            [(1, 1000), (2, -850)],
            r"journal: unbalanced: the postings sum to 150 minor units, not 0 \(debits 1000, credits -850\)",
        ),
        ([(1, 100), (2, 0), (3, -100)], "journal, posting 2: amount is zero"),
        (
            [(1, Decimal("1.50")), (2, -1)],
            r"journal, posting 1: amount must be an integer number of minor units, got Decimal\('1.50'\)",
        ),
        ([(1, 1.5), (2, -1.5)], "posting 1: amount must be an integer number of minor units, got 1.5"),
        ([(1, True), (2, -1)], "posting 1: amount must be an integer number of minor units, got True"),
        (
            [(1, MAX_AMOUNT_MINOR + 1), (2, -MAX_AMOUNT_MINOR - 1)],
            "posting 1: amount 1000000000000001 is beyond",
        ),
        ([(0, 5), (2, -5)], "posting 1: ledger_account_id must be a positive integer, got 0"),
        ([(1, 5), "2,-5"], r"posting 2: expected \(ledger_account_id, amount_minor\), got '2,-5'"),
        ("1,2", "postings must be a list"),
    ],
)
def test_check_postings_refuses_with_the_reason(postings: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        check_postings(postings, "journal")  # type: ignore[arg-type]


def _account(account_id: int, site_id: int = 1, currency: str = "KES") -> LedgerAccountInfo:
    return LedgerAccountInfo(
        id=account_id,
        site_id=site_id,
        code=f"cash/p{account_id}",
        purpose=AccountPurpose.CASH,
        kind=AccountKind.ASSET,
        currency=currency,
        customer_account_id=None,
        name=f"p{account_id}",
        opened_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_check_accounts_refuses_missing_foreign_and_other_currency_accounts() -> None:
    postings = [NewPosting(1, 5), NewPosting(2, -5)]
    check_accounts(postings, {1: _account(1), 2: _account(2)}, 1, "KES")
    with pytest.raises(ValidationError, match="journal, posting 2: no ledger account with id 2 in site 1"):
        check_accounts(postings, {1: _account(1)}, 1, "KES")
    with pytest.raises(ValidationError, match="posting 2: no ledger account with id 2 in site 1"):
        check_accounts(postings, {1: _account(1), 2: _account(2, site_id=9)}, 1, "KES")
    with pytest.raises(
        ValidationError, match=r"posting 2: ledger account 2 \(cash/p2\) is in USD, the journal in KES"
    ):
        check_accounts(postings, {1: _account(1), 2: _account(2, currency="USD")}, 1, "KES")


def test_reversal_negates_every_posting_and_restores_balances() -> None:
    journal = [NewPosting(1, 700), NewPosting(2, -500), NewPosting(3, -200)]
    reversal = reversal_of(journal)
    assert reversal == (NewPosting(1, -700), NewPosting(2, 500), NewPosting(3, 200))
    assert balances([*journal, *reversal]) == {1: 0, 2: 0, 3: 0}
    assert reversal_problem(journal, reversal) is None
    assert reversal_problem(journal, list(reversed(reversal))) is None  # order does not matter
    assert (
        reversal_problem(journal, reversal[:2]) == "does not negate every posting of the journal it reverses"
    )
    assert reversal_problem(journal, journal) is not None


def test_same_postings_compares_as_multisets() -> None:
    a = [NewPosting(1, 5), NewPosting(1, 5), NewPosting(2, -10)]
    assert same_postings(a, [NewPosting(2, -10), NewPosting(1, 5), NewPosting(1, 5)])
    assert not same_postings(a, [NewPosting(1, 10), NewPosting(2, -10)])


def test_journal_problem_names_what_is_wrong() -> None:
    assert journal_problem(2, 2, 0) is None
    assert journal_problem(2, 0, 0) == "has 0 posting(s); a journal needs at least two"
    assert journal_problem(2, 3, 0) == "declares 2 postings but has 3"
    assert journal_problem(2, 2, 7) == "is unbalanced: its postings sum to 7 minor units, not 0"
