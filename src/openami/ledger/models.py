"""Ledger tables: ledger accounts (the chart of accounts of each site), journals and their postings.

What the tables declare themselves, on SQLite and PostgreSQL alike:
- a posting carries its journal's and its account's site and currency, and two composite foreign keys tie it to
  both, so a posting, its journal and its account are in one site and one currency;
- a journal declares its `posting_count` (at least two); the guards (`ledger.guards`) check at commit that it
  has exactly that many postings and that they sum to zero, and refuse UPDATE and DELETE on all three tables;
- the foreign key from a posting to its journal is deferred to the commit, because the postings are written
  first and the journal row last (SQLite has no deferred triggers: its check runs when the journal row arrives);
- a journal reverses at most one journal, and is reversed at most once (`reverses_journal_id` is unique).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from openami.ledger.double_entry import CHART_OF_ACCOUNTS, MEMO_MAX_LEN, NAME_MAX_LEN, REFERENCE_MAX_LEN
from openami.ledger.interfaces import JournalKind
from openami.storage.base import Base, UTCDateTime

# An integer primary key that is a rowid on SQLite and 64-bit on PostgreSQL.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")

_CHART = " OR ".join(
    f"(purpose = '{purpose.value}' AND kind = '{kind.value}')"
    for purpose, (kind, _) in CHART_OF_ACCOUNTS.items()
)
_JOURNAL_KINDS = ", ".join(f"'{k.value}'" for k in JournalKind)
_CURRENCY_SHAPE = "length({col}) = 3 AND upper({col}) = {col}"


class LedgerAccount(Base):
    __tablename__ = "ledger_account"
    __table_args__ = (
        UniqueConstraint("site_id", "currency", "code"),
        # What the postings' composite foreign key points at.
        UniqueConstraint("id", "site_id", "currency"),
        CheckConstraint(_CHART, name="purpose_and_kind"),
        CheckConstraint(_CURRENCY_SHAPE.format(col="currency"), name="currency_code"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    code: Mapped[str] = mapped_column(String(100))
    purpose: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    customer_account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(NAME_MAX_LEN))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Journal(Base):
    __tablename__ = "journal"
    __table_args__ = (
        UniqueConstraint("id", "site_id", "currency"),
        # Idempotency: a payment provider's payment id, say, is written once per site.
        UniqueConstraint("site_id", "external_reference"),
        ForeignKeyConstraint(
            ["reverses_journal_id", "site_id", "currency"],
            ["journal.id", "journal.site_id", "journal.currency"],
        ),
        CheckConstraint(f"kind IN ({_JOURNAL_KINDS})", name="kind"),
        CheckConstraint("posting_count >= 2", name="at_least_two_postings"),
        CheckConstraint(
            "(kind = 'reversal' AND reverses_journal_id IS NOT NULL) "
            "OR (kind <> 'reversal' AND reverses_journal_id IS NULL)",
            name="reversal_links_its_journal",
        ),
        CheckConstraint(_CURRENCY_SHAPE.format(col="currency"), name="currency_code"),
    )

    # Taken by the service before the postings are written, since they point at it (from the sequence on
    # PostgreSQL): see storage.numbered.next_ids.
    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    kind: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    external_reference: Mapped[str | None] = mapped_column(String(REFERENCE_MAX_LEN))
    memo: Mapped[str] = mapped_column(String(MEMO_MAX_LEN))
    reverses_journal_id: Mapped[int | None] = mapped_column(BigIntId, unique=True)
    posting_count: Mapped[int] = mapped_column(Integer)


class Posting(Base):
    __tablename__ = "posting"
    __table_args__ = (
        ForeignKeyConstraint(
            ["journal_id", "site_id", "currency"],
            ["journal.id", "journal.site_id", "journal.currency"],
            deferrable=True,
            initially="DEFERRED",
        ),
        ForeignKeyConstraint(
            ["ledger_account_id", "site_id", "currency"],
            ["ledger_account.id", "ledger_account.site_id", "ledger_account.currency"],
        ),
        CheckConstraint("amount_minor <> 0", name="amount_not_zero"),
        Index("ix_posting_ledger_account_id_journal_id", "ledger_account_id", "journal_id"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    journal_id: Mapped[int] = mapped_column(BigIntId, index=True)
    ledger_account_id: Mapped[int] = mapped_column(Integer)
    site_id: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)  # debit positive, credit negative
