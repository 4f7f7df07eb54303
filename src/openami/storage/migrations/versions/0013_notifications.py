"""notification preferences, subscriptions, messages and deliveries

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-25 22:00:00

`notification_event.dedupe_key` is unique (one message per rule, account and episode); a message is unique per
event and subscription, and its idempotency key is unique. See openami.notifications.models.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import openami.storage.base

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _instant() -> openami.storage.base.UTCDateTime:
    return openami.storage.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "notification_preference",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("low_balance_minor", sa.BigInteger(), nullable=True),
        sa.Column("low_balance_days", sa.Integer(), nullable=True),
        sa.Column("quiet_start", sa.Time(), nullable=True),
        sa.Column("quiet_end", sa.Time(), nullable=True),
        sa.Column("updated_at", _instant(), nullable=False),
        sa.CheckConstraint("language IN ('en', 'zh-Hans')", name=op.f("ck_notification_preference_language")),
        sa.CheckConstraint(
            "low_balance_minor IS NULL OR low_balance_minor >= 0",
            name=op.f("ck_notification_preference_amount_non_negative"),
        ),
        sa.CheckConstraint(
            "low_balance_days IS NULL OR low_balance_days BETWEEN 0 AND 365",
            name=op.f("ck_notification_preference_days_range"),
        ),
        sa.CheckConstraint(
            "(quiet_start IS NULL) = (quiet_end IS NULL)",
            name=op.f("ck_notification_preference_quiet_both_or_neither"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_notification_preference_account_id_account")
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_notification_preference")),
    )
    op.create_table(
        "notification_subscription",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("address_hash", sa.String(length=64), nullable=False),
        sa.Column("secret", sa.String(length=200), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", _instant(), nullable=False),
        sa.Column("deactivated_at", _instant(), nullable=True),
        sa.CheckConstraint(
            "channel IN ('web_push', 'email', 'apprise', 'webhook')",
            name=op.f("ck_notification_subscription_channel"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_notification_subscription_account_id_account")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_subscription")),
        sa.UniqueConstraint(
            "account_id",
            "channel",
            "address_hash",
            name=op.f("uq_notification_subscription_account_id_channel_address_hash"),
        ),
    )
    with op.batch_alter_table("notification_subscription", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_notification_subscription_account_id"), ["account_id"], unique=False
        )

    op.create_table(
        "notification_event",
        sa.Column("id", _BIGINT_ID, nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("occurred_at", _instant(), nullable=False),
        sa.Column("created_at", _instant(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_notification_event_account_id_account")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_event")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_notification_event_dedupe_key")),
    )
    with op.batch_alter_table("notification_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notification_event_account_id"), ["account_id"], unique=False)

    op.create_table(
        "notification_message",
        sa.Column("id", _BIGINT_ID, nullable=False),
        sa.Column("event_id", _BIGINT_ID, nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("urgent", sa.Boolean(), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("not_before", _instant(), nullable=False),
        sa.Column("next_attempt_at", _instant(), nullable=False),
        sa.Column("expires_at", _instant(), nullable=True),
        sa.Column("sent_at", _instant(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("created_at", _instant(), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'sending', 'sent', 'failed', 'expired', 'unconfirmed')",
            name=op.f("ck_notification_message_status"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_notification_message_attempts_non_negative")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_notification_message_account_id_account")
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["notification_event.id"],
            name=op.f("fk_notification_message_event_id_notification_event"),
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["notification_subscription.id"],
            name=op.f("fk_notification_message_subscription_id_notification_subscription"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_message")),
        sa.UniqueConstraint(
            "event_id", "subscription_id", name=op.f("uq_notification_message_event_id_subscription_id")
        ),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_notification_message_idempotency_key")),
    )
    with op.batch_alter_table("notification_message", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notification_message_account_id"), ["account_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_notification_message_subscription_id"), ["subscription_id"], unique=False
        )
        batch_op.create_index(
            "ix_notification_message_status_next_attempt_at", ["status", "next_attempt_at"], unique=False
        )

    op.create_table(
        "notification_delivery",
        sa.Column("id", _BIGINT_ID, nullable=False),
        sa.Column("message_id", _BIGINT_ID, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", _instant(), nullable=False),
        sa.Column("finished_at", _instant(), nullable=True),
        sa.Column("outcome", sa.String(length=12), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("provider_reference", sa.String(length=200), nullable=True),
        sa.CheckConstraint(
            "outcome IS NULL OR outcome IN ('ok', 'retryable', 'permanent', 'interrupted')",
            name=op.f("ck_notification_delivery_outcome"),
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["notification_message.id"],
            name=op.f("fk_notification_delivery_message_id_notification_message"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_delivery")),
        sa.UniqueConstraint(
            "message_id", "attempt", name=op.f("uq_notification_delivery_message_id_attempt")
        ),
    )


def downgrade() -> None:
    op.drop_table("notification_delivery")
    with op.batch_alter_table("notification_message", schema=None) as batch_op:
        batch_op.drop_index("ix_notification_message_status_next_attempt_at")
        batch_op.drop_index(batch_op.f("ix_notification_message_subscription_id"))
        batch_op.drop_index(batch_op.f("ix_notification_message_account_id"))
    op.drop_table("notification_message")
    with op.batch_alter_table("notification_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notification_event_account_id"))
    op.drop_table("notification_event")
    with op.batch_alter_table("notification_subscription", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notification_subscription_account_id"))
    op.drop_table("notification_subscription")
    op.drop_table("notification_preference")
