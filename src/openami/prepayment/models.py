"""Wallet tables: a wallet per prepaid account, each consumption charge posted from it and its parts, and the
credit rules of a site.

A wallet stores no balance: the balance is the (negated) balance of the account's `prepayment` ledger account,
which payments credit and charges debit. What a wallet does store is what the ledger cannot say: up to when
consumption was charged, whether emergency credit is in use, and whether the supply is on. A charge's lines are
what it charged per ledger account (revenue per component, tax per name), so the next charge of the same
bill cycle posts only the difference to the cycle's cost so far. Money is integer minor units (`*_minor`).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from openami.storage.base import Base, UTCDateTime

BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class PrepaidWallet(Base):
    """The wallet of one prepaid account."""

    __tablename__ = "prepaid_wallet"
    __table_args__ = (CheckConstraint("charges >= 0", name="charges_not_negative"),)

    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    ledger_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_account.id"), unique=True)  # prepayment
    receivable_ledger_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_account.id"), unique=True)
    currency: Mapped[str] = mapped_column(String(3))
    charge_from: Mapped[date] = mapped_column(Date)  # the local day consumption is charged from
    charged_until: Mapped[datetime | None] = mapped_column(UTCDateTime())  # None: nothing charged yet
    charges: Mapped[int] = mapped_column(Integer)  # charges posted: the next one's sequence number - 1
    emergency_granted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    supply_connected: Mapped[bool] = mapped_column(Boolean)
    supply_changed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PrepaidCharge(Base):
    """One consumption charge posted from a wallet: the cycle's cost up to `charged_until` less what was
    charged in the cycle before."""

    __tablename__ = "prepaid_charge"
    __table_args__ = (UniqueConstraint("account_id", "seq"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("prepaid_wallet.account_id"))
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per wallet; in the journal's reference
    cycle_start: Mapped[date] = mapped_column(Date)  # the bill cycle it charges, by its first local day
    charged_from: Mapped[datetime] = mapped_column(UTCDateTime())
    charged_until: Mapped[datetime] = mapped_column(UTCDateTime())
    amount_minor: Mapped[int] = mapped_column(BigInteger)  # debited to the wallet (< 0: given back)
    journal_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("journal.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PrepaidChargeLine(Base):
    """What a charge charged for one ledger account: a revenue purpose, or tax payable with the tax's name.
    Positive: charged to the customer (export credit, contra-revenue, is negative)."""

    __tablename__ = "prepaid_charge_line"

    charge_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("prepaid_charge.id"), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)  # "" unless tax payable
    amount_minor: Mapped[int] = mapped_column(BigInteger)


class PrepaidCreditRules(Base):
    """A site's credit rules (see `prepayment.credit.CreditRules`); a site without a row has the defaults."""

    __tablename__ = "prepaid_credit_rules"
    __table_args__ = (
        CheckConstraint("emergency_credit_minor >= 0", name="emergency_not_negative"),
        CheckConstraint("debt_recovery_bp BETWEEN 0 AND 10000", name="debt_recovery_share"),
    )

    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), primary_key=True)
    low_credit_minor: Mapped[int] = mapped_column(BigInteger)
    disconnect_below_minor: Mapped[int] = mapped_column(BigInteger)
    reconnect_at_minor: Mapped[int | None] = mapped_column(BigInteger)
    emergency_credit_minor: Mapped[int] = mapped_column(BigInteger)
    debt_recovery_bp: Mapped[int] = mapped_column(Integer)
    friendly_from: Mapped[str | None] = mapped_column(String(5))  # local "HH:MM"
    friendly_to: Mapped[str | None] = mapped_column(String(5))
    friendly_weekdays: Mapped[str] = mapped_column(String(20))  # e.g. "5,6" (0 Monday ... 6 Sunday)
    friendly_holidays: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
