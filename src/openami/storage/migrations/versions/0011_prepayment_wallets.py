"""prepaid wallets and credit rules

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25 22:00:00

A wallet per prepaid account (its balance is the ledger's, not stored here), each consumption charge posted from
it with what it charged per ledger account, and the credit rules of a site (openami.prepayment.models).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import openami.storage.base

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "prepaid_wallet",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("ledger_account_id", sa.Integer(), nullable=False),
        sa.Column("receivable_ledger_account_id", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("charge_from", sa.Date(), nullable=False),
        sa.Column("charged_until", openami.storage.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("charges", sa.Integer(), nullable=False),
        sa.Column("emergency_granted_at", openami.storage.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("supply_connected", sa.Boolean(), nullable=False),
        sa.Column("supply_changed_at", openami.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("opened_at", openami.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("charges >= 0", name=op.f("ck_prepaid_wallet_charges_not_negative")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_prepaid_wallet_account_id_account")
        ),
        sa.ForeignKeyConstraint(
            ["ledger_account_id"],
            ["ledger_account.id"],
            name=op.f("fk_prepaid_wallet_ledger_account_id_ledger_account"),
        ),
        sa.ForeignKeyConstraint(
            ["receivable_ledger_account_id"],
            ["ledger_account.id"],
            name=op.f("fk_prepaid_wallet_receivable_ledger_account_id_ledger_account"),
        ),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_prepaid_wallet_site_id_site")),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_prepaid_wallet")),
        sa.UniqueConstraint("ledger_account_id", name=op.f("uq_prepaid_wallet_ledger_account_id")),
        sa.UniqueConstraint(
            "receivable_ledger_account_id", name=op.f("uq_prepaid_wallet_receivable_ledger_account_id")
        ),
    )
    with op.batch_alter_table("prepaid_wallet", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_prepaid_wallet_site_id"), ["site_id"], unique=False)

    op.create_table(
        "prepaid_charge",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("cycle_start", sa.Date(), nullable=False),
        sa.Column("charged_from", openami.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("charged_until", openami.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("journal_id", _BIG_ID, nullable=False),
        sa.Column("created_at", openami.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["prepaid_wallet.account_id"],
            name=op.f("fk_prepaid_charge_account_id_prepaid_wallet"),
        ),
        sa.ForeignKeyConstraint(
            ["journal_id"], ["journal.id"], name=op.f("fk_prepaid_charge_journal_id_journal")
        ),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_prepaid_charge_site_id_site")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prepaid_charge")),
        sa.UniqueConstraint("account_id", "seq", name=op.f("uq_prepaid_charge_account_id_seq")),
    )
    with op.batch_alter_table("prepaid_charge", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_prepaid_charge_site_id"), ["site_id"], unique=False)

    op.create_table(
        "prepaid_charge_line",
        sa.Column("charge_id", _BIG_ID, nullable=False),
        sa.Column("purpose", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["charge_id"], ["prepaid_charge.id"], name=op.f("fk_prepaid_charge_line_charge_id_prepaid_charge")
        ),
        sa.PrimaryKeyConstraint("charge_id", "purpose", "name", name=op.f("pk_prepaid_charge_line")),
    )

    op.create_table(
        "prepaid_credit_rules",
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("low_credit_minor", sa.BigInteger(), nullable=False),
        sa.Column("disconnect_below_minor", sa.BigInteger(), nullable=False),
        sa.Column("reconnect_at_minor", sa.BigInteger(), nullable=True),
        sa.Column("emergency_credit_minor", sa.BigInteger(), nullable=False),
        sa.Column("debt_recovery_bp", sa.Integer(), nullable=False),
        sa.Column("friendly_from", sa.String(length=5), nullable=True),
        sa.Column("friendly_to", sa.String(length=5), nullable=True),
        sa.Column("friendly_weekdays", sa.String(length=20), nullable=False),
        sa.Column("friendly_holidays", sa.Boolean(), nullable=False),
        sa.Column("updated_at", openami.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "debt_recovery_bp BETWEEN 0 AND 10000", name=op.f("ck_prepaid_credit_rules_debt_recovery_share")
        ),
        sa.CheckConstraint(
            "emergency_credit_minor >= 0", name=op.f("ck_prepaid_credit_rules_emergency_not_negative")
        ),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_prepaid_credit_rules_site_id_site")),
        sa.PrimaryKeyConstraint("site_id", name=op.f("pk_prepaid_credit_rules")),
    )


def downgrade() -> None:
    op.drop_table("prepaid_credit_rules")
    op.drop_table("prepaid_charge_line")
    with op.batch_alter_table("prepaid_charge", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prepaid_charge_site_id"))
    op.drop_table("prepaid_charge")
    with op.batch_alter_table("prepaid_wallet", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prepaid_wallet_site_id"))
    op.drop_table("prepaid_wallet")
