"""Relay control tables: each site's control policy, supply protections per account, weather emergencies,
bulk operations and relay commands.

A command row is never deleted: its state moves queued -> sent -> confirmed | unconfirmed | failed | expired |
cancelled, each step also written to the operation log. `request_key` (the caller's idempotency key) is unique,
so a request repeated after a crash or a double click finds the command already made.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from openami.storage.base import Base, UTCDateTime

BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class ControlPolicy(Base):
    """A site's control settings; a site without a row uses the defaults of ControlService."""

    __tablename__ = "control_policy"
    __table_args__ = (
        CheckConstraint("night_start_hour BETWEEN 0 AND 23", name="night_start_hour"),
        CheckConstraint("night_end_hour BETWEEN 0 AND 23", name="night_end_hour"),
        CheckConstraint("commands_per_minute > 0", name="commands_per_minute_positive"),
        CheckConstraint("max_attempts > 0", name="max_attempts_positive"),
        CheckConstraint("first_retry_s > 0", name="first_retry_positive"),
        CheckConstraint("command_ttl_s > 0", name="command_ttl_positive"),
    )

    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), primary_key=True)
    night_start_hour: Mapped[int] = mapped_column(Integer)
    night_end_hour: Mapped[int] = mapped_column(Integer)
    block_weekends: Mapped[bool] = mapped_column(Boolean)
    block_holidays: Mapped[bool] = mapped_column(Boolean)
    commands_per_minute: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer)
    first_retry_s: Mapped[int] = mapped_column(Integer)
    command_ttl_s: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str] = mapped_column(String(200))


class SupplyProtection(Base):
    """No disconnect for `account_id` in [valid_from, valid_until): a medical-priority or vulnerable customer."""

    __tablename__ = "supply_protection"
    __table_args__ = (
        CheckConstraint("kind IN ('medical', 'vulnerable')", name="kind"),
        CheckConstraint("valid_until IS NULL OR valid_until > valid_from", name="valid_span"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(500))
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WeatherEmergency(Base):
    """A declared weather emergency of a site: no disconnects in [starts_at, ends_at)."""

    __tablename__ = "weather_emergency"
    __table_args__ = (CheckConstraint("ends_at > starts_at", name="span"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    reason: Mapped[str] = mapped_column(String(500))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime())
    declared_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class BulkOperation(Base):
    """One command kind for a list of meters, sent at most `per_minute` a minute, cancellable as a whole."""

    __tablename__ = "control_bulk_operation"
    __table_args__ = (CheckConstraint("per_minute > 0", name="per_minute_positive"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    request_key: Mapped[str] = mapped_column(String(100), unique=True)
    per_minute: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class RelayCommand(Base):
    """One command to one meter and where it stands; see the module docstring for the states."""

    __tablename__ = "relay_command"
    __table_args__ = (
        CheckConstraint(
            "state IN ('queued', 'sent', 'confirmed', 'unconfirmed', 'failed', 'expired', 'cancelled')",
            name="state",
        ),
        CheckConstraint(
            "kind IN ('disconnect', 'reconnect', 'read_now', 'set_clock', 'set_load_limit')", name="kind"
        ),
        CheckConstraint(
            "(kind = 'set_load_limit' AND limit_w IS NOT NULL AND limit_w >= 0)"
            " OR (kind <> 'set_load_limit' AND limit_w IS NULL)",
            name="limit_w_with_set_load_limit",
        ),
        CheckConstraint("attempts >= 0", name="attempts_not_negative"),
        # The dispatcher's scan: active commands by when they are next due.
        Index("ix_relay_command_state_next_attempt_at", "state", "next_attempt_at"),
        Index("ix_relay_command_meter_id_state", "meter_id", "state"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    meter_id: Mapped[int] = mapped_column(ForeignKey("meter.id"))
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(12))
    request_key: Mapped[str] = mapped_column(String(100), unique=True)
    actor: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(String(500))
    bulk_id: Mapped[int | None] = mapped_column(ForeignKey("control_bulk_operation.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    first_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    refused_rule: Mapped[str | None] = mapped_column(String(24))
    refused_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reported_connected: Mapped[bool | None] = mapped_column(Boolean)
    detail: Mapped[str] = mapped_column(Text, default="")
    limit_w: Mapped[int | None] = mapped_column(Integer)  # set_load_limit only: the limit asked for, W
