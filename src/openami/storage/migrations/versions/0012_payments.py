"""online payments, webhooks and receipts

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-25 22:00:00

A payment per checkout (provider payment id unique per provider), every webhook delivery with its outcome, and a
receipt per credited payment. See openami.prepayment.payments_models.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import openami.storage.base

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_INSTANT = openami.storage.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "payment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("reference", sa.String(length=40), nullable=False),
        sa.Column("provider_payment_id", sa.String(length=100), nullable=True),
        sa.Column("checkout_id", sa.String(length=200), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("failure_reason", sa.String(length=500), nullable=True),
        sa.Column("created_at", _INSTANT, nullable=False),
        sa.Column("succeeded_at", _INSTANT, nullable=True),
        sa.Column("failed_at", _INSTANT, nullable=True),
        sa.Column("reversed_at", _INSTANT, nullable=True),
        sa.Column("journal_id", _ID, nullable=True),
        sa.Column("reversal_journal_id", _ID, nullable=True),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_payment_amount_positive")),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed', 'refunded', 'charged_back')",
            name=op.f("ck_payment_status"),
        ),
        sa.ForeignKeyConstraint(["account_id"], ["account.id"], name=op.f("fk_payment_account_id_account")),
        sa.ForeignKeyConstraint(["journal_id"], ["journal.id"], name=op.f("fk_payment_journal_id_journal")),
        sa.ForeignKeyConstraint(
            ["reversal_journal_id"], ["journal.id"], name=op.f("fk_payment_reversal_journal_id_journal")
        ),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_payment_site_id_site")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment")),
        sa.UniqueConstraint(
            "provider", "provider_payment_id", name=op.f("uq_payment_provider_provider_payment_id")
        ),
        sa.UniqueConstraint("reference", name=op.f("uq_payment_reference")),
    )
    with op.batch_alter_table("payment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payment_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_payment_site_id"), ["site_id"], unique=False)

    op.create_table(
        "payment_event",
        sa.Column("id", _ID, nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("received_at", _INSTANT, nullable=False),
        sa.Column("provider_event_id", sa.String(length=200), nullable=True),
        sa.Column("payment_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=True),
        sa.Column("provider_payment_id", sa.String(length=100), nullable=True),
        sa.Column("reference", sa.String(length=40), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("outcome", sa.String(length=12), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('applied', 'duplicate', 'ignored', 'refused')", name=op.f("ck_payment_event_outcome")
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payment.id"], name=op.f("fk_payment_event_payment_id_payment")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_event")),
    )
    with op.batch_alter_table("payment_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payment_event_payment_id"), ["payment_id"], unique=False)

    op.create_table(
        "payment_receipt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("payment_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=40), nullable=False),
        sa.Column("issued_at", _INSTANT, nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payment.id"], name=op.f("fk_payment_receipt_payment_id_payment")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_receipt")),
        sa.UniqueConstraint("number", name=op.f("uq_payment_receipt_number")),
        sa.UniqueConstraint("payment_id", name=op.f("uq_payment_receipt_payment_id")),
    )


def downgrade() -> None:
    op.drop_table("payment_receipt")
    with op.batch_alter_table("payment_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_event_payment_id"))
    op.drop_table("payment_event")
    with op.batch_alter_table("payment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_site_id"))
        batch_op.drop_index(batch_op.f("ix_payment_account_id"))
    op.drop_table("payment")
