"""The outbox table. One row per event, kept after it is done (until purged) so a repeated key stays a duplicate.

What the table declares itself, on SQLite and PostgreSQL alike:
- a key is unique per topic: emitting it again inserts nothing (INSERT ... ON CONFLICT DO NOTHING);
- `status` is pending, done or dead, and `done_at` / `dead_at` are set exactly when it says so;
- a lease is whole: `locked_by` and `locked_until` are both set or both empty;
- a partial index over the pending rows, by topic and `available_at`, is what a claim reads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from openami.outbox.interfaces import EventStatus
from openami.storage.base import Base, UTCDateTime

# An integer primary key that is a rowid on SQLite and 64-bit on PostgreSQL.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")

TOPIC_MAX_LEN = 100
KEY_MAX_LEN = 200
WORKER_MAX_LEN = 200
_STATUSES = ", ".join(f"'{s.value}'" for s in EventStatus)


class OutboxEventRow(Base):
    __tablename__ = "outbox_event"
    __table_args__ = (
        UniqueConstraint("topic", "dedupe_key"),
        CheckConstraint(f"status IN ({_STATUSES})", name="status"),
        CheckConstraint(
            "(status = 'done' AND done_at IS NOT NULL) OR (status <> 'done' AND done_at IS NULL)",
            name="done_at_when_done",
        ),
        CheckConstraint(
            "(status = 'dead' AND dead_at IS NOT NULL) OR (status <> 'dead' AND dead_at IS NULL)",
            name="dead_at_when_dead",
        ),
        CheckConstraint(
            "(locked_by IS NULL AND locked_until IS NULL) OR (locked_by IS NOT NULL AND locked_until IS NOT NULL)",
            name="lease_whole",
        ),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        Index(
            "ix_outbox_event_claimable",
            "topic",
            "available_at",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    topic: Mapped[str] = mapped_column(String(TOPIC_MAX_LEN))
    dedupe_key: Mapped[str] = mapped_column(String(KEY_MAX_LEN))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON())
    site_id: Mapped[int | None] = mapped_column(ForeignKey("site.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    available_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer())
    status: Mapped[str] = mapped_column(String(12))
    locked_by: Mapped[str | None] = mapped_column(String(WORKER_MAX_LEN))
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    dead_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text())
