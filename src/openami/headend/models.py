"""Head-end tables: per-meter link state (anti-replay, command counter) and the log of rejected frames."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from openami.storage.base import Base, UTCDateTime

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
_BIG_ID = BigInteger().with_variant(Integer(), "sqlite")


class MeterLink(Base):
    """What the head-end remembers about each meter's frames; one row per meter, made on its first frame."""

    __tablename__ = "meter_link"

    meter_id: Mapped[int] = mapped_column(ForeignKey("meter.id", ondelete="CASCADE"), primary_key=True)
    # Highest uplink counter accepted (0: none yet), and which of the 64 counters up to it were seen
    # (bit i: highest - i), stored as the signed two's complement of the 64-bit window (see replay.py).
    highest_counter: Mapped[int] = mapped_column(BigInteger, default=0)
    replay_window: Mapped[int] = mapped_column(BigInteger, default=0)
    last_frame_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    frames_accepted: Mapped[int] = mapped_column(BigInteger, default=0)
    # Last counter used on a down-link command to this meter.
    down_counter: Mapped[int] = mapped_column(BigInteger, default=0)


class FrameRejection(Base):
    """A frame the head-end refused: a stable reason code (see docs/protocol.md) and a readable detail."""

    __tablename__ = "frame_rejection"
    __table_args__ = (
        Index("ix_frame_rejection_reason_received_at", "reason", "received_at"),
        Index("ix_frame_rejection_serial_received_at", "serial", "received_at"),
    )

    id: Mapped[int] = mapped_column(_BIG_ID, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    serial: Mapped[str | None] = mapped_column(String(40))  # None when the topic named no valid serial
    topic: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
