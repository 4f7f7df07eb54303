"""OpenPAYGo offline tokens

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-25 22:00:00

Each site's token credit unit, each token meter's sealed OpenPAYGo key, starting code and last count, and every
token issued, unique per meter and count (openami.prepayment.tokens_models).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import openami.storage.base

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CREDIT_KINDS = "credit_kind IN ('energy', 'money')"


def upgrade() -> None:
    op.create_table(
        "offline_token_site",
        sa.Column("site_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("credit_kind", sa.String(length=10), nullable=False),
        sa.Column("unit_size", sa.Integer(), nullable=False),
        sa.Column("updated_at", openami.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(_CREDIT_KINDS, name=op.f("ck_offline_token_site_credit_kind")),
        sa.CheckConstraint("unit_size > 0", name=op.f("ck_offline_token_site_unit_size_positive")),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_offline_token_site_site_id_site")),
        sa.PrimaryKeyConstraint("site_id", name=op.f("pk_offline_token_site")),
    )
    op.create_table(
        "offline_token_meter",
        sa.Column("meter_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("sealed_key", sa.LargeBinary(length=128), nullable=False),
        sa.Column("starting_code", sa.Integer(), nullable=False),
        sa.Column("credit_kind", sa.String(length=10), nullable=False),
        sa.Column("unit_size", sa.Integer(), nullable=False),
        sa.Column("last_count", sa.Integer(), nullable=False),
        sa.Column("provisioned_at", openami.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(_CREDIT_KINDS, name=op.f("ck_offline_token_meter_credit_kind")),
        sa.CheckConstraint("unit_size > 0", name=op.f("ck_offline_token_meter_unit_size_positive")),
        sa.CheckConstraint(
            "starting_code BETWEEN 0 AND 999999999", name=op.f("ck_offline_token_meter_starting_code_range")
        ),
        sa.CheckConstraint("last_count >= 0", name=op.f("ck_offline_token_meter_last_count_not_negative")),
        sa.ForeignKeyConstraint(
            ["meter_id"], ["meter.id"], name=op.f("fk_offline_token_meter_meter_id_meter")
        ),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_offline_token_meter_site_id_site")),
        sa.PrimaryKeyConstraint("meter_id", name=op.f("pk_offline_token_meter")),
    )
    with op.batch_alter_table("offline_token_meter", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_offline_token_meter_site_id"), ["site_id"], unique=False)

    op.create_table(
        "offline_token",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("meter_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("token", sa.String(length=9), nullable=False),
        sa.Column("value_units", sa.Integer(), nullable=True),
        sa.Column("credit_kind", sa.String(length=10), nullable=False),
        sa.Column("credit_amount", sa.BigInteger(), nullable=True),
        sa.Column("issued_at", openami.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("issued_by", sa.String(length=200), nullable=False),
        sa.Column("payment_reference", sa.String(length=100), nullable=True),
        sa.CheckConstraint("kind IN ('add', 'set', 'disable')", name=op.f("ck_offline_token_kind")),
        sa.CheckConstraint(_CREDIT_KINDS, name=op.f("ck_offline_token_credit_kind")),
        sa.CheckConstraint("count > 0", name=op.f("ck_offline_token_count_positive")),
        sa.CheckConstraint(
            "(kind = 'disable' AND value_units IS NULL AND credit_amount IS NULL) OR "
            "(kind = 'add' AND value_units > 0 AND credit_amount > 0) OR "
            "(kind = 'set' AND value_units >= 0 AND credit_amount >= 0)",
            name=op.f("ck_offline_token_value_by_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["meter_id"],
            ["offline_token_meter.meter_id"],
            name=op.f("fk_offline_token_meter_id_offline_token_meter"),
        ),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_offline_token_site_id_site")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offline_token")),
        sa.UniqueConstraint("meter_id", "count", name=op.f("uq_offline_token_meter_id_count")),
    )
    with op.batch_alter_table("offline_token", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_offline_token_payment_reference"), ["payment_reference"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_offline_token_site_id"), ["site_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("offline_token", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_offline_token_site_id"))
        batch_op.drop_index(batch_op.f("ix_offline_token_payment_reference"))
    op.drop_table("offline_token")
    with op.batch_alter_table("offline_token_meter", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_offline_token_meter_site_id"))
    op.drop_table("offline_token_meter")
    op.drop_table("offline_token_site")
