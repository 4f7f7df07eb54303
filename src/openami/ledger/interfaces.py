"""What other contexts hand to and learn from the ledger: plain values, never the ledger's tables.

Money here is always an integer number of the currency's minor units (cents, fen, ...), named `*_minor`.
A posting's amount is signed: a debit is positive, a credit negative, and every journal's postings sum to zero.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol

from sqlalchemy.orm import Session

from openami.registry.interfaces import AccountInfo, SiteInfo


class AccountKind(enum.StrEnum):
    """The five kinds of ledger account. Assets and expenses normally carry a debit (positive) balance;
    liabilities, revenue and equity a credit (negative) one."""

    ASSET = "asset"
    LIABILITY = "liability"
    REVENUE = "revenue"
    EXPENSE = "expense"
    EQUITY = "equity"


class AccountPurpose(enum.StrEnum):
    """The chart of accounts: what a ledger account is for. Each purpose fixes the account's kind
    (`double_entry.CHART_OF_ACCOUNTS`) and what qualifies it (a customer account, or a name)."""

    RECEIVABLE = "receivable"  # asset, one per customer account: what the customer owes
    PREPAYMENT = "prepayment"  # liability, one per customer account: money the customer paid in advance
    REVENUE_ENERGY = "revenue.energy"  # revenue: energy charges (time-of-use, tiers, dynamic prices)
    REVENUE_FIXED = "revenue.fixed"  # revenue: fixed charges per day or month
    REVENUE_DEMAND = "revenue.demand"  # revenue: demand charges (maximum kW)
    REVENUE_MINIMUM = "revenue.minimum"  # revenue: top-ups to a minimum charge
    EXPORT_CREDIT = "revenue.export_credit"  # contra-revenue: credits for exported energy, debited
    TAX_PAYABLE = "tax_payable"  # liability, one per tax by name (e.g. "VAT"): collected, owed to the state
    CASH = "cash"  # asset, one per payment provider by name (e.g. "mpesa", "cash-office"): money received
    BAD_DEBT = "bad_debt"  # expense: receivables written off
    OPENING_BALANCE = "opening_balance"  # equity: balances brought over from a previous system


class JournalKind(enum.StrEnum):
    """The business event a journal records."""

    BILL = "bill"
    PAYMENT = "payment"
    REFUND = "refund"
    ADJUSTMENT = "adjustment"  # a write-off, opening balances, a transfer between a customer's accounts
    REVERSAL = "reversal"  # every posting of another journal negated; made only by LedgerService.reverse


class NewPosting(NamedTuple):
    """One line of a journal to post: `amount_minor` > 0 debits `ledger_account_id`, < 0 credits it."""

    ledger_account_id: int
    amount_minor: int


@dataclass(frozen=True, slots=True)
class NewJournal:
    """One journal for `LedgerService.post_many`, which gives every journal of a call the same site, kind,
    currency and `occurred_at` (a billing run's bills, say)."""

    postings: tuple[NewPosting, ...]
    # Unique per site: a journal posted again under it is answered with the journal written then.
    external_reference: str | None = None
    memo: str = ""


@dataclass(frozen=True, slots=True)
class LedgerAccountInfo:
    id: int
    site_id: int
    code: str  # e.g. "receivable/account-17", "cash/mpesa", "revenue.energy"; unique per site and currency
    purpose: AccountPurpose
    kind: AccountKind
    currency: str  # ISO 4217
    customer_account_id: int | None  # the registry account, for receivables and prepayments
    name: str | None  # the payment provider of a cash account, the tax of a tax-payable account
    opened_at: datetime  # UTC


@dataclass(frozen=True, slots=True)
class PostingInfo:
    id: int
    ledger_account_id: int
    amount_minor: int  # debit positive, credit negative


@dataclass(frozen=True, slots=True)
class JournalInfo:
    id: int
    site_id: int
    currency: str  # ISO 4217; every posting is in it
    kind: JournalKind
    occurred_at: datetime  # UTC: when the business event happened (balances "as of" an instant use it)
    recorded_at: datetime  # UTC: when the ledger wrote it, by openami's clock
    external_reference: str | None  # unique per site when given, e.g. a payment provider's payment id
    memo: str
    reverses_journal_id: int | None
    postings: tuple[PostingInfo, ...]


@dataclass(frozen=True, slots=True)
class TrialBalanceLine:
    account: LedgerAccountInfo
    debit_minor: int  # the sum of the account's debits (>= 0)
    credit_minor: int  # the sum of the account's credits (<= 0)

    @property
    def balance_minor(self) -> int:
        return self.debit_minor + self.credit_minor


@dataclass(frozen=True, slots=True)
class TrialBalance:
    """Every ledger account of one site in one currency, with its debits and credits up to `as_of`."""

    site_id: int
    currency: str
    as_of: datetime | None  # journals that occurred at or before it; None: every journal
    lines: tuple[TrialBalanceLine, ...]

    @property
    def total_debit_minor(self) -> int:
        return sum(line.debit_minor for line in self.lines)

    @property
    def total_credit_minor(self) -> int:
        return sum(line.credit_minor for line in self.lines)

    @property
    def balanced(self) -> bool:
        """True when debits and credits cancel: the sum of every balance is zero."""
        return self.total_debit_minor + self.total_credit_minor == 0


@dataclass(frozen=True, slots=True)
class LedgerCheckReport:
    """What `LedgerService.check` found. `problem` names the first fault, in journal id order."""

    journals: int
    postings: int
    trial_balances: tuple[
        tuple[int, str, int], ...
    ]  # (site id, currency, sum of every posting): all zero if ok
    first_bad_journal_id: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


class SiteDirectory(Protocol):
    """What the ledger asks the registry (RegistryService implements it): a site's currency, an account's site."""

    def get_site(self, session: Session, site_id: int) -> SiteInfo: ...

    def get_account(self, session: Session, account_id: int) -> AccountInfo: ...

    def accounts_in_site(self, session: Session, site_id: int, account_ids: Collection[int]) -> set[int]: ...
