"""Relay control: the set_load_limit command

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-26 10:00:00

relay_command accepts the kind set_load_limit and keeps the limit it asks for (limit_w, W; 0 removes the limit),
present exactly on that kind (openami.control.models.RelayCommand).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_KINDS = "kind IN ('disconnect', 'reconnect', 'read_now', 'set_clock')"
_NEW_KINDS = "kind IN ('disconnect', 'reconnect', 'read_now', 'set_clock', 'set_load_limit')"
_LIMIT_W = (
    "(kind = 'set_load_limit' AND limit_w IS NOT NULL AND limit_w >= 0)"
    " OR (kind <> 'set_load_limit' AND limit_w IS NULL)"
)


def upgrade() -> None:
    with op.batch_alter_table("relay_command", schema=None) as batch_op:
        batch_op.add_column(sa.Column("limit_w", sa.Integer(), nullable=True))
        batch_op.drop_constraint(batch_op.f("ck_relay_command_kind"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_relay_command_kind"), _NEW_KINDS)
        batch_op.create_check_constraint(batch_op.f("ck_relay_command_limit_w_with_set_load_limit"), _LIMIT_W)


def downgrade() -> None:
    # Load-limit commands cannot be kept under the old kinds: they go with their column.
    op.execute("DELETE FROM relay_command WHERE kind = 'set_load_limit'")
    with op.batch_alter_table("relay_command", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_relay_command_limit_w_with_set_load_limit"), type_="check")
        batch_op.drop_constraint(batch_op.f("ck_relay_command_kind"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_relay_command_kind"), _OLD_KINDS)
        batch_op.drop_column("limit_w")
