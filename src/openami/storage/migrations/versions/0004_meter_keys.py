"""meter keys sealed at rest, with the previous key kept for a grace period after a rotation

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 19:20:00

`meter.auth_key` now holds the key sealed with AES-256-GCM under a master key (security.meter_keys). The
migration cannot know the master key, so existing rows keep their 32-byte plaintext key: the registry reads
such a legacy value as it is, and `openami keys seal-legacy` seals every one of them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import openami.storage.base

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A sealed key is at most 94 bytes; the models say LargeBinary(128). Neither PostgreSQL (bytea) nor SQLite
    # (BLOB) stores a length for binary columns, so widening `auth_key` from 64 is a change of the models only:
    # altering the column here would rewrite the table on SQLite for nothing.
    with op.batch_alter_table("meter", schema=None) as batch_op:
        batch_op.add_column(sa.Column("previous_auth_key", sa.LargeBinary(length=128), nullable=True))
        batch_op.add_column(
            sa.Column("previous_key_until", openami.storage.base.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    # The code before 0004 reads only plaintext keys, and this migration cannot unseal (it has no master key):
    # refuse rather than leave meters whose frames would all be refused. The previous keys are dropped.
    sealed = (
        op.get_bind().execute(sa.text("SELECT count(*) FROM meter WHERE length(auth_key) <> 32")).scalar_one()
    )
    if sealed:
        raise RuntimeError(
            f"{sealed} meter key(s) are sealed, and the code before 0004 reads only plaintext keys: "
            "downgrading would lock those meters out (a migration has no master key to unseal them). "
            "Restore a backup taken before 0004 instead"
        )
    with op.batch_alter_table("meter", schema=None) as batch_op:
        batch_op.drop_column("previous_key_until")
        batch_op.drop_column("previous_auth_key")
