"""What other contexts (the CLI, the API, invoices) learn from billing: plain values, never its tables.

Money is integer minor units of the bill's currency (`*_minor`); energy is integer Wh (`*_wh`); days are the
site's local dates, a period `[start, end)` (end is the day after the last).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal


class BillStatus(enum.StrEnum):
    ISSUED = "issued"
    REVERSED = "reversed"  # corrected: its journal was reversed and a new bill replaces it


class Outcome(enum.StrEnum):
    BILLED = "billed"
    ALREADY_BILLED = (
        "already_billed"  # an issued bill for the account and period start exists: nothing written
    )
    NOT_BILLED = "not_billed"  # see the reason; nothing was written for the account


@dataclass(frozen=True, slots=True)
class TariffInfo:
    id: int
    site_id: int
    code: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class BillLineInfo:
    component: str  # energy, fixed, minimum, demand, export, dynamic, tax
    description: str
    period: str | None  # "season/period"
    tier: int | None
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount_minor: int


@dataclass(frozen=True, slots=True)
class BillInfo:
    id: int
    account_id: int
    site_id: int
    period_start: date
    period_end: date
    currency: str
    total_minor: int
    import_wh: int
    export_wh: int
    intervals_estimated: int
    status: BillStatus
    journal_id: int | None
    replaces_bill_id: int | None
    created_at: datetime
    lines: tuple[BillLineInfo, ...]


@dataclass(frozen=True, slots=True)
class AccountOutcome:
    account_id: int
    account_number: str
    outcome: Outcome
    reason: str = ""  # why not billed, or which bill it already has
    bill: BillInfo | None = None


@dataclass(frozen=True, slots=True)
class BillingRunReport:
    site_id: int
    period_start: date
    period_end: date
    accounts: tuple[AccountOutcome, ...]

    def count(self, outcome: Outcome) -> int:
        return sum(1 for a in self.accounts if a.outcome is outcome)


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """An account's current cycle priced to `as_of` (cost so far) or to its end (projected bill)."""

    account_id: int
    cycle_start: date
    cycle_end: date
    as_of: datetime  # UTC
    currency: str
    total_minor: int
    import_wh: int  # measured (cost so far), or measured plus projected (projected bill)
    intervals_measured: int  # stored intervals counted (estimated ones included)
    intervals_estimated: int
    lines: tuple[BillLineInfo, ...]
