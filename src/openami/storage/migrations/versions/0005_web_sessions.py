"""web sessions (cookie secret and CSRF token stored hashed) and the customers a person may see

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import openami.storage.base

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "user_customer",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customer.id"], name=op.f("fk_user_customer_customer_id_customer")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["app_user.id"], name=op.f("fk_user_customer_user_id_app_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "customer_id", name=op.f("pk_user_customer")),
    )
    with op.batch_alter_table("user_customer", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_user_customer_customer_id"), ["customer_id"], unique=False)

    op.create_table(
        "web_session",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("csrf_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", openami.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", openami.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", openami.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", openami.storage.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["app_user.id"], name=op.f("fk_web_session_user_id_app_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_session")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_web_session_token_hash")),
    )
    with op.batch_alter_table("web_session", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_web_session_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("web_session", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_web_session_user_id"))
    op.drop_table("web_session")
    with op.batch_alter_table("user_customer", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_user_customer_customer_id"))
    op.drop_table("user_customer")
