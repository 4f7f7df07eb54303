"""What other contexts learn from the wallets: plain values, never the wallet tables. Money is integer minor
units of the site's currency (`*_minor`); instants are aware UTC."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from openami.prepayment.credit import CreditAction


@dataclass(frozen=True, slots=True)
class WalletInfo:
    account_id: int
    site_id: int
    currency: str
    ledger_account_id: int  # the account's `prepayment` ledger account
    balance_minor: int  # credit left: the ledger account's balance negated (< 0: in emergency credit or debt)
    debt_minor: int  # what the account owes on its receivable (0 when nothing)
    charge_from: date  # local day consumption is charged from
    charged_until: datetime | None  # consumption is charged up to this instant
    emergency_granted: bool
    supply_connected: bool
    supply_changed_at: datetime


class ChargeOutcome(enum.StrEnum):
    CHARGED = "charged"  # a journal was posted
    UP_TO_DATE = "up_to_date"  # nothing to post: charged to the instant already, or the cost did not change
    NOT_CHARGED = "not_charged"  # cannot be priced now (no tariff in force, no meters ...): see the reason


@dataclass(frozen=True, slots=True)
class ChargeResult:
    account_id: int
    outcome: ChargeOutcome
    amount_minor: int = 0  # debited to the wallet by this call (summed over the cycles it charged)
    journal_ids: tuple[int, ...] = ()
    charged_until: datetime | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ChargeRunReport:
    site_id: int
    until: datetime
    results: tuple[ChargeResult, ...]

    def count(self, outcome: ChargeOutcome) -> int:
        return sum(1 for r in self.results if r.outcome is outcome)

    @property
    def amount_minor(self) -> int:
        return sum(r.amount_minor for r in self.results)


@dataclass(frozen=True, slots=True)
class TopUpResult:
    """What a top-up did besides crediting the wallet (which the payment's own journal did)."""

    account_id: int
    recovered_minor: int  # moved from the wallet to the receivable to repay debt
    recovery_journal_id: int | None
    balance_minor: int  # after the top-up and the recovery
    emergency_rearmed: bool  # the top-up repaid the emergency credit: it may be granted again


@dataclass(frozen=True, slots=True)
class DueAction:
    """An account whose credit calls for something now: a warning, a cut-off or a reconnection.

    `request_key` is the same for every evaluation of one episode (until the supply changes state), so relay
    control, which is idempotent per request key, sends one command however often the site is evaluated."""

    account_id: int
    account_number: str
    action: CreditAction
    reason: str
    balance_minor: int
    days_left: Decimal | None  # at the recent mean daily cost; None when unknown or not running out
    friendly_until: datetime | None  # a cut-off held back by friendly hours is due from then
    request_key: str
