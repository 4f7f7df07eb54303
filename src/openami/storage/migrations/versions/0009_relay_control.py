"""relay commands, site control policies, supply protections, weather emergencies

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 22:00:00

Tables of openami.control.models: control_policy (per site), supply_protection (per account),
weather_emergency (per site), control_bulk_operation and relay_command (unique request keys for idempotency).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import openami.storage.base

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UTC = openami.storage.base.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "control_bulk_operation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("request_key", sa.String(length=100), nullable=False),
        sa.Column("per_minute", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("created_at", _UTC(timezone=True), nullable=False),
        sa.Column("cancelled_at", _UTC(timezone=True), nullable=True),
        sa.CheckConstraint("per_minute > 0", name=op.f("ck_control_bulk_operation_per_minute_positive")),
        sa.ForeignKeyConstraint(
            ["site_id"], ["site.id"], name=op.f("fk_control_bulk_operation_site_id_site")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_control_bulk_operation")),
        sa.UniqueConstraint("request_key", name=op.f("uq_control_bulk_operation_request_key")),
    )
    op.create_index(
        op.f("ix_control_bulk_operation_site_id"), "control_bulk_operation", ["site_id"], unique=False
    )
    op.create_table(
        "control_policy",
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("night_start_hour", sa.Integer(), nullable=False),
        sa.Column("night_end_hour", sa.Integer(), nullable=False),
        sa.Column("block_weekends", sa.Boolean(), nullable=False),
        sa.Column("block_holidays", sa.Boolean(), nullable=False),
        sa.Column("commands_per_minute", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("first_retry_s", sa.Integer(), nullable=False),
        sa.Column("command_ttl_s", sa.Integer(), nullable=False),
        sa.Column("updated_at", _UTC(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.CheckConstraint("command_ttl_s > 0", name=op.f("ck_control_policy_command_ttl_positive")),
        sa.CheckConstraint(
            "commands_per_minute > 0", name=op.f("ck_control_policy_commands_per_minute_positive")
        ),
        sa.CheckConstraint("first_retry_s > 0", name=op.f("ck_control_policy_first_retry_positive")),
        sa.CheckConstraint("max_attempts > 0", name=op.f("ck_control_policy_max_attempts_positive")),
        sa.CheckConstraint("night_end_hour BETWEEN 0 AND 23", name=op.f("ck_control_policy_night_end_hour")),
        sa.CheckConstraint(
            "night_start_hour BETWEEN 0 AND 23", name=op.f("ck_control_policy_night_start_hour")
        ),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_control_policy_site_id_site")),
        sa.PrimaryKeyConstraint("site_id", name=op.f("pk_control_policy")),
    )
    op.create_table(
        "weather_emergency",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("starts_at", _UTC(timezone=True), nullable=False),
        sa.Column("ends_at", _UTC(timezone=True), nullable=False),
        sa.Column("declared_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", _UTC(timezone=True), nullable=False),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_weather_emergency_span")),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_weather_emergency_site_id_site")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_weather_emergency")),
    )
    op.create_index(op.f("ix_weather_emergency_site_id"), "weather_emergency", ["site_id"], unique=False)
    op.create_table(
        "supply_protection",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("valid_from", _UTC(timezone=True), nullable=False),
        sa.Column("valid_until", _UTC(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", _UTC(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('medical', 'vulnerable')", name=op.f("ck_supply_protection_kind")),
        sa.CheckConstraint(
            "valid_until IS NULL OR valid_until > valid_from", name=op.f("ck_supply_protection_valid_span")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_supply_protection_account_id_account")
        ),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_supply_protection_site_id_site")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_supply_protection")),
    )
    op.create_index(
        op.f("ix_supply_protection_account_id"), "supply_protection", ["account_id"], unique=False
    )
    op.create_index(op.f("ix_supply_protection_site_id"), "supply_protection", ["site_id"], unique=False)
    op.create_table(
        "relay_command",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("meter_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("request_key", sa.String(length=100), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=40), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("bulk_id", sa.Integer(), nullable=True),
        sa.Column("created_at", _UTC(timezone=True), nullable=False),
        sa.Column("expires_at", _UTC(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _UTC(timezone=True), nullable=True),
        sa.Column("first_sent_at", _UTC(timezone=True), nullable=True),
        sa.Column("last_sent_at", _UTC(timezone=True), nullable=True),
        sa.Column("finished_at", _UTC(timezone=True), nullable=True),
        sa.Column("refused_rule", sa.String(length=24), nullable=True),
        sa.Column("refused_until", _UTC(timezone=True), nullable=True),
        sa.Column("reported_connected", sa.Boolean(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('disconnect', 'reconnect', 'read_now', 'set_clock')", name=op.f("ck_relay_command_kind")
        ),
        sa.CheckConstraint(
            "state IN ('queued', 'sent', 'confirmed', 'unconfirmed', 'failed', 'expired', 'cancelled')",
            name=op.f("ck_relay_command_state"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_relay_command_attempts_not_negative")),
        sa.ForeignKeyConstraint(
            ["bulk_id"],
            ["control_bulk_operation.id"],
            name=op.f("fk_relay_command_bulk_id_control_bulk_operation"),
        ),
        sa.ForeignKeyConstraint(["meter_id"], ["meter.id"], name=op.f("fk_relay_command_meter_id_meter")),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_relay_command_site_id_site")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_relay_command")),
        sa.UniqueConstraint("request_key", name=op.f("uq_relay_command_request_key")),
    )
    op.create_index(op.f("ix_relay_command_bulk_id"), "relay_command", ["bulk_id"], unique=False)
    op.create_index("ix_relay_command_meter_id_state", "relay_command", ["meter_id", "state"], unique=False)
    op.create_index(op.f("ix_relay_command_site_id"), "relay_command", ["site_id"], unique=False)
    op.create_index(
        "ix_relay_command_state_next_attempt_at", "relay_command", ["state", "next_attempt_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_relay_command_state_next_attempt_at", table_name="relay_command")
    op.drop_index(op.f("ix_relay_command_site_id"), table_name="relay_command")
    op.drop_index("ix_relay_command_meter_id_state", table_name="relay_command")
    op.drop_index(op.f("ix_relay_command_bulk_id"), table_name="relay_command")
    op.drop_table("relay_command")
    op.drop_index(op.f("ix_supply_protection_site_id"), table_name="supply_protection")
    op.drop_index(op.f("ix_supply_protection_account_id"), table_name="supply_protection")
    op.drop_table("supply_protection")
    op.drop_index(op.f("ix_weather_emergency_site_id"), table_name="weather_emergency")
    op.drop_table("weather_emergency")
    op.drop_table("control_policy")
    op.drop_index(op.f("ix_control_bulk_operation_site_id"), table_name="control_bulk_operation")
    op.drop_table("control_bulk_operation")
