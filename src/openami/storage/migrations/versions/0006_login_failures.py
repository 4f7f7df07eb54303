"""failed sign-ins counted per username and address (an attacker locks out only their own address)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 19:50:00

The account-wide counter and lock on app_user go: a lock earned by guesses from one address no longer keeps the
real person, signing in from another, out. Locks in force at the upgrade are dropped with them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import openami.storage.base

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_failure",
        sa.Column("username", sa.String(length=150), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", openami.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("locked_until", openami.storage.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("username", "address", name=op.f("pk_login_failure")),
    )
    with op.batch_alter_table("login_failure", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_login_failure_last_failure_at"), ["last_failure_at"], unique=False
        )
    with op.batch_alter_table("app_user", schema=None) as batch_op:
        batch_op.drop_column("locked_until")
        batch_op.drop_column("failed_logins")


def downgrade() -> None:
    with op.batch_alter_table("app_user", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failed_logins", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column("locked_until", openami.storage.base.UTCDateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("login_failure", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_login_failure_last_failure_at"))
    op.drop_table("login_failure")
