"""Billing tables: tariffs of a site, which tariff an account is on from when, bill cycles, bills and bill lines.

Money is integer minor units (`*_minor`); quantities and unit prices are kept as exact decimal text
(`DecimalText`), so SQLite and PostgreSQL both give back exactly what the pricing core computed. A bill is
never deleted: a correction marks it `reversed` and a new bill `replaces_bill_id` it. At most one bill per
account and period start is `issued` (a partial unique index).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from openami.storage.base import Base, UTCDateTime

BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class DecimalText(TypeDecorator[Decimal]):
    """An exact Decimal stored as its text (SQLite has no exact decimal type)."""

    impl = String(50)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if not isinstance(value, Decimal) or not value.is_finite():
            raise ValueError(f"expected a finite Decimal, got {value!r}")
        return str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


class TariffRecord(Base):
    """A tariff of one site: its native document (JSON text, checked by `tariffs.native.parse_tariff`)."""

    __tablename__ = "tariff"
    __table_args__ = (UniqueConstraint("site_id", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    code: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    document: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AccountTariff(Base):
    """Account `account_id` is on tariff `tariff_id` from the local date `effective_from` until the next one."""

    __tablename__ = "account_tariff"
    __table_args__ = (UniqueConstraint("account_id", "effective_from"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"), index=True)
    tariff_id: Mapped[int] = mapped_column(ForeignKey("tariff.id"), index=True)
    effective_from: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class BillCycle(Base):
    """An account's bill cycle: bills run from `cycle_day` of one month to the same day of the next (1: the
    calendar month). An account without a row is billed by calendar month."""

    __tablename__ = "bill_cycle"
    __table_args__ = (CheckConstraint("cycle_day BETWEEN 1 AND 28", name="cycle_day_range"),)

    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"), primary_key=True)
    cycle_day: Mapped[int] = mapped_column(Integer)
    set_at: Mapped[datetime] = mapped_column(UTCDateTime())


class BillRecord(Base):
    """One bill of one account for the local days `[period_start, period_end)`."""

    __tablename__ = "bill"
    __table_args__ = (
        CheckConstraint("status IN ('issued', 'reversed')", name="status"),
        CheckConstraint("period_end > period_start", name="period_positive"),
        CheckConstraint("intervals_estimated >= 0", name="estimated_non_negative"),
        Index(
            "uq_bill_issued_account_period",
            "account_id",
            "period_start",
            unique=True,
            sqlite_where=text("status = 'issued'"),
            postgresql_where=text("status = 'issued'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    period_start: Mapped[date] = mapped_column(Date)  # first local day
    period_end: Mapped[date] = mapped_column(Date)  # the day after the last
    currency: Mapped[str] = mapped_column(String(3))
    total_minor: Mapped[int] = mapped_column(BigInteger)
    import_wh: Mapped[int] = mapped_column(BigInteger)
    export_wh: Mapped[int] = mapped_column(BigInteger)
    intervals_estimated: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(12))
    # The bill's journal; NULL only for a bill of nothing (every line zero), which posts no journal.
    journal_id: Mapped[int | None] = mapped_column(BigIntId, ForeignKey("journal.id"))
    replaces_bill_id: Mapped[int | None] = mapped_column(ForeignKey("bill.id"), unique=True)
    reversal_journal_id: Mapped[int | None] = mapped_column(BigIntId, ForeignKey("journal.id"))
    reversal_reason: Mapped[str | None] = mapped_column(String(500))
    reversed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class BillLineRecord(Base):
    """One explained charge of a bill, as the pricing core made it; `amount_minor` is the rounded amount."""

    __tablename__ = "bill_line"
    __table_args__ = (UniqueConstraint("bill_id", "line_no"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    bill_id: Mapped[int] = mapped_column(ForeignKey("bill.id"), index=True)
    line_no: Mapped[int] = mapped_column(Integer)
    component: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(String(300))
    period: Mapped[str | None] = mapped_column(String(100))  # "season/period"
    tier: Mapped[int | None] = mapped_column(Integer)
    quantity: Mapped[Decimal] = mapped_column(DecimalText())
    unit: Mapped[str] = mapped_column(String(16))
    unit_price: Mapped[Decimal] = mapped_column(DecimalText())
    amount_minor: Mapped[int] = mapped_column(BigInteger)
