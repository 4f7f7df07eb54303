"""the transactional outbox

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25 22:00:00

One table, `outbox_event` (openami.outbox.models): a key unique per topic, a lease (`locked_by`, `locked_until`)
set or empty as a whole, `done_at` / `dead_at` set exactly when the status says so, and a partial index over the
pending rows by topic and `available_at` for claims, on both databases.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import openami.storage.base

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_event",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("topic", sa.String(length=100), nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=True),
        sa.Column("created_at", openami.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("available_at", openami.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("locked_by", sa.String(length=200), nullable=True),
        sa.Column("locked_until", openami.storage.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("done_at", openami.storage.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("dead_at", openami.storage.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'done', 'dead')", name=op.f("ck_outbox_event_status")),
        sa.CheckConstraint(
            "(status = 'done' AND done_at IS NOT NULL) OR (status <> 'done' AND done_at IS NULL)",
            name=op.f("ck_outbox_event_done_at_when_done"),
        ),
        sa.CheckConstraint(
            "(status = 'dead' AND dead_at IS NOT NULL) OR (status <> 'dead' AND dead_at IS NULL)",
            name=op.f("ck_outbox_event_dead_at_when_dead"),
        ),
        sa.CheckConstraint(
            "(locked_by IS NULL AND locked_until IS NULL) OR (locked_by IS NOT NULL AND locked_until IS NOT NULL)",
            name=op.f("ck_outbox_event_lease_whole"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_outbox_event_attempts_non_negative")),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_outbox_event_site_id_site")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_event")),
        sa.UniqueConstraint("topic", "dedupe_key", name=op.f("uq_outbox_event_topic_dedupe_key")),
    )
    with op.batch_alter_table("outbox_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbox_event_site_id"), ["site_id"], unique=False)
        batch_op.create_index(
            "ix_outbox_event_claimable",
            ["topic", "available_at"],
            unique=False,
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox_event", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_event_claimable")
        batch_op.drop_index(batch_op.f("ix_outbox_event_site_id"))
    op.drop_table("outbox_event")
