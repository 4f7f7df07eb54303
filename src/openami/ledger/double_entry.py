"""Double-entry arithmetic, pure: the chart of accounts, what makes a journal valid, reversals, balances.

No session, clock or I/O: plain values in, plain values (or a ValidationError naming the problem) out. Amounts
are integers of the currency's minor unit, signed: a debit is positive, a credit negative.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from openami.common.errors import ValidationError
from openami.ledger.interfaces import AccountKind, AccountPurpose, LedgerAccountInfo, NewPosting

# The largest amount one posting may carry: 10^15 minor units (ten trillion in a currency with cents). Sums of
# millions of postings then still fit in 64 bits, on SQLite too (whose integers overflow rather than widen).
MAX_AMOUNT_MINOR = 10**15
NAME_MAX_LEN = 60
REFERENCE_MAX_LEN = 120
MEMO_MAX_LEN = 500


class Qualifier(enum.Enum):
    """What tells apart the ledger accounts of one purpose in a site."""

    NONE = "none"  # one account per site and currency
    CUSTOMER_ACCOUNT = "customer_account"  # one per registry account
    NAME = "name"  # one per name: a payment provider, a tax


# The chart of accounts: each purpose's kind and qualifier.
CHART_OF_ACCOUNTS: Mapping[AccountPurpose, tuple[AccountKind, Qualifier]] = {
    AccountPurpose.RECEIVABLE: (AccountKind.ASSET, Qualifier.CUSTOMER_ACCOUNT),
    AccountPurpose.PREPAYMENT: (AccountKind.LIABILITY, Qualifier.CUSTOMER_ACCOUNT),
    AccountPurpose.REVENUE_ENERGY: (AccountKind.REVENUE, Qualifier.NONE),
    AccountPurpose.REVENUE_FIXED: (AccountKind.REVENUE, Qualifier.NONE),
    AccountPurpose.REVENUE_DEMAND: (AccountKind.REVENUE, Qualifier.NONE),
    AccountPurpose.REVENUE_MINIMUM: (AccountKind.REVENUE, Qualifier.NONE),
    AccountPurpose.EXPORT_CREDIT: (AccountKind.REVENUE, Qualifier.NONE),
    AccountPurpose.TAX_PAYABLE: (AccountKind.LIABILITY, Qualifier.NAME),
    AccountPurpose.CASH: (AccountKind.ASSET, Qualifier.NAME),
    AccountPurpose.BAD_DEBT: (AccountKind.EXPENSE, Qualifier.NONE),
    AccountPurpose.OPENING_BALANCE: (AccountKind.EQUITY, Qualifier.NONE),
}

_CURRENCY = re.compile(r"[A-Z]{3}")
# A name becomes part of the account's code: letters, digits and a few separators, no spaces or slashes.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")


def kind_of(purpose: AccountPurpose) -> AccountKind:
    return CHART_OF_ACCOUNTS[purpose][0]


def valid_purpose(value: Any, where: str = "purpose") -> AccountPurpose:
    try:
        return AccountPurpose(value)
    except ValueError:
        known = ", ".join(p.value for p in AccountPurpose)
        raise ValidationError(f"{value!r} is not a ledger account purpose (one of: {known})", where) from None


def valid_currency(value: Any, where: str = "currency") -> str:
    """An ISO 4217 code as three upper-case letters, e.g. 'KES'."""
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        raise ValidationError(
            f"{value!r} is not an ISO 4217 currency code (three upper-case letters, e.g. 'KES')", where
        )
    return value


def valid_text(value: Any, where: str, max_len: int, *, allow_empty: bool = False) -> str:
    """A string of at most `max_len` characters, without NUL (which PostgreSQL text cannot hold)."""
    if not isinstance(value, str):
        raise ValidationError(f"must be a string, got {value!r}", where)
    if not allow_empty and not value.strip():
        raise ValidationError("must not be empty", where)
    if len(value) > max_len:
        raise ValidationError(f"longer than {max_len} characters", where)
    if "\x00" in value:
        raise ValidationError("contains a NUL character", where)
    return value


def account_code(purpose: AccountPurpose, customer_account_id: int | None, name: str | None) -> str:
    """The code of a ledger account in its site's chart, e.g. 'receivable/account-17', 'cash/mpesa', 'revenue.fixed'.

    Raises ValidationError when the qualifier `purpose` needs is missing, or one it does not take is given.
    """
    qualifier = CHART_OF_ACCOUNTS[purpose][1]
    if qualifier is not Qualifier.CUSTOMER_ACCOUNT and customer_account_id is not None:
        raise ValidationError(
            f"a {purpose.value} account is not kept per customer account", "customer_account_id"
        )
    if qualifier is not Qualifier.NAME and name is not None:
        raise ValidationError(f"a {purpose.value} account takes no name", "name")
    if qualifier is Qualifier.CUSTOMER_ACCOUNT:
        if not isinstance(customer_account_id, int) or isinstance(customer_account_id, bool):
            raise ValidationError(
                f"a {purpose.value} account is kept per customer account: give its id, got {customer_account_id!r}",
                "customer_account_id",
            )
        return f"{purpose.value}/account-{customer_account_id}"
    if qualifier is Qualifier.NAME:
        where = "name"
        valid_text(name, where, NAME_MAX_LEN)
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValidationError(
                f"{name!r}: a {purpose.value} account's name (its "
                f"{'payment provider' if purpose is AccountPurpose.CASH else 'tax'}) is letters, digits, '_', '.', "
                "':' and '-', starting with a letter or digit",
                where,
            )
        return f"{purpose.value}/{name}"
    return purpose.value


def _valid_amount(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(
            f"amount must be an integer number of minor units, got {value!r} (convert money at the edge, once)",
            where,
        )
    if value == 0:
        raise ValidationError("amount is zero: a posting moves money or is left out", where)
    if abs(value) > MAX_AMOUNT_MINOR:
        raise ValidationError(f"amount {value} is beyond ±{MAX_AMOUNT_MINOR} minor units", where)
    return value


def check_postings(postings: Sequence[Any], where: str = "journal") -> tuple[NewPosting, ...]:
    """The postings of one journal, checked: at least two, each a non-zero integer amount on an account id,
    summing to zero. Raises ValidationError naming the posting (numbered from 1) or the imbalance."""
    if isinstance(postings, str | bytes) or not isinstance(postings, Sequence):
        raise ValidationError(
            f"postings must be a list of (ledger_account_id, amount_minor), got {postings!r}", where
        )
    if len(postings) < 2:
        raise ValidationError(f"a journal needs at least two postings, got {len(postings)}", where)
    checked = []
    for number, posting in enumerate(postings, start=1):
        at = f"{where}, posting {number}"
        if not isinstance(posting, tuple) or len(posting) != 2:
            raise ValidationError(f"expected (ledger_account_id, amount_minor), got {posting!r}", at)
        account_id, amount = posting
        if not isinstance(account_id, int) or isinstance(account_id, bool) or account_id <= 0:
            raise ValidationError(f"ledger_account_id must be a positive integer, got {account_id!r}", at)
        checked.append(NewPosting(account_id, _valid_amount(amount, at)))
    total = sum(p.amount_minor for p in checked)
    if total != 0:
        debits = sum(p.amount_minor for p in checked if p.amount_minor > 0)
        credits = sum(p.amount_minor for p in checked if p.amount_minor < 0)
        raise ValidationError(
            f"unbalanced: the postings sum to {total} minor units, not 0 (debits {debits}, credits {credits})",
            where,
        )
    return tuple(checked)


def check_accounts(
    postings: Sequence[NewPosting],
    accounts: Mapping[int, LedgerAccountInfo],
    site_id: int,
    currency: str,
    where: str = "journal",
) -> None:
    """Every posting's account exists (is in `accounts`), belongs to the journal's site and is in its currency."""
    for number, posting in enumerate(postings, start=1):
        at = f"{where}, posting {number}"
        account = accounts.get(posting.ledger_account_id)
        if account is None or account.site_id != site_id:
            raise ValidationError(
                f"no ledger account with id {posting.ledger_account_id} in site {site_id}", at
            )
        if account.currency != currency:
            raise ValidationError(
                f"ledger account {account.id} ({account.code}) is in {account.currency}, the journal in {currency}: "
                "a journal's postings are all in its currency",
                at,
            )


def reversal_of(postings: Iterable[NewPosting]) -> tuple[NewPosting, ...]:
    """The postings that undo `postings`: the same accounts, every amount negated."""
    return tuple(NewPosting(p.ledger_account_id, -p.amount_minor) for p in postings)


def same_postings(a: Iterable[NewPosting], b: Iterable[NewPosting]) -> bool:
    """True when `a` and `b` hold the same postings, in any order."""
    return Counter((p.ledger_account_id, p.amount_minor) for p in a) == Counter(
        (p.ledger_account_id, p.amount_minor) for p in b
    )


def balances(postings: Iterable[NewPosting]) -> dict[int, int]:
    """Each account's balance in minor units (debits positive, credits negative): the sum of its postings."""
    out: dict[int, int] = {}
    for p in postings:
        out[p.ledger_account_id] = out.get(p.ledger_account_id, 0) + p.amount_minor
    return out


def journal_problem(posting_count: int, postings_found: int, total_minor: int) -> str | None:
    """What is wrong with a stored journal, from its declared posting count and its postings' count and sum."""
    if postings_found < 2:
        return f"has {postings_found} posting(s); a journal needs at least two"
    if postings_found != posting_count:
        return f"declares {posting_count} postings but has {postings_found}"
    if total_minor != 0:
        return f"is unbalanced: its postings sum to {total_minor} minor units, not 0"
    return None


def reversal_problem(original: Iterable[NewPosting], reversal: Iterable[NewPosting]) -> str | None:
    """What is wrong with a stored reversal: None when it negates every posting of `original`, and only those."""
    if same_postings(reversal_of(original), reversal):
        return None
    return "does not negate every posting of the journal it reverses"
