"""Offline-token tables: each site's credit unit, each token meter's key and counter, and every token issued.

- `offline_token_site`: what a site's tokens carry, energy or money, and how many Wh or minor units one token
  value unit is. Copied into a meter's row when it is provisioned, because the meter is configured with it.
- `offline_token_meter`: a meter's OpenPAYGo secret key, sealed like meter keys (security.meter_keys), its
  starting code and the last token count issued. The count only goes up.
- `offline_token`: one row per token issued, never updated or deleted; `(meter_id, count)` is unique, so a
  count is never issued twice even by two concurrent requests.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from openami.storage.base import Base, UTCDateTime

BigIntId = BigInteger().with_variant(Integer(), "sqlite")
SEALED_TOKEN_KEY_MAX_BYTES = 128
PAYMENT_REFERENCE_MAX_LEN = 100
ACTOR_MAX_LEN = 200

_CREDIT_KINDS = "credit_kind IN ('energy', 'money')"


class OfflineTokenSite(Base):
    """A site's choice: tokens carry energy (`unit_size` Wh per value unit) or money (`unit_size` minor units)."""

    __tablename__ = "offline_token_site"
    __table_args__ = (
        CheckConstraint(_CREDIT_KINDS, name="credit_kind"),
        CheckConstraint("unit_size > 0", name="unit_size_positive"),
    )

    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), primary_key=True, autoincrement=False)
    credit_kind: Mapped[str] = mapped_column(String(10))
    unit_size: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OfflineTokenMeter(Base):
    """A meter provisioned for tokens. `sealed_key` holds the 16-byte OpenPAYGo key, sealed (see tokens.py)."""

    __tablename__ = "offline_token_meter"
    __table_args__ = (
        CheckConstraint(_CREDIT_KINDS, name="credit_kind"),
        CheckConstraint("unit_size > 0", name="unit_size_positive"),
        CheckConstraint("starting_code BETWEEN 0 AND 999999999", name="starting_code_range"),
        CheckConstraint("last_count >= 0", name="last_count_not_negative"),
    )

    meter_id: Mapped[int] = mapped_column(ForeignKey("meter.id"), primary_key=True, autoincrement=False)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    sealed_key: Mapped[bytes] = mapped_column(LargeBinary(SEALED_TOKEN_KEY_MAX_BYTES))
    starting_code: Mapped[int] = mapped_column(Integer)
    credit_kind: Mapped[str] = mapped_column(String(10))
    unit_size: Mapped[int] = mapped_column(Integer)
    last_count: Mapped[int] = mapped_column(Integer)  # the count of the newest token issued (1 before any)
    provisioned_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OfflineToken(Base):
    """One token issued: its count, kind, value (token units) and credit (Wh or minor units), who and why."""

    __tablename__ = "offline_token"
    __table_args__ = (
        UniqueConstraint("meter_id", "count"),
        CheckConstraint("kind IN ('add', 'set', 'disable')", name="kind"),
        CheckConstraint(_CREDIT_KINDS, name="credit_kind"),
        CheckConstraint("count > 0", name="count_positive"),
        CheckConstraint(
            "(kind = 'disable' AND value_units IS NULL AND credit_amount IS NULL) OR "
            "(kind = 'add' AND value_units > 0 AND credit_amount > 0) OR "
            "(kind = 'set' AND value_units >= 0 AND credit_amount >= 0)",
            name="value_by_kind",
        ),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    meter_id: Mapped[int] = mapped_column(ForeignKey("offline_token_meter.meter_id"))
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    count: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(10))
    token: Mapped[str] = mapped_column(String(9))
    value_units: Mapped[int | None] = mapped_column(Integer)
    credit_kind: Mapped[str] = mapped_column(String(10))
    credit_amount: Mapped[int | None] = mapped_column(BigInteger)  # Wh or minor units
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    issued_by: Mapped[str] = mapped_column(String(ACTOR_MAX_LEN))
    payment_reference: Mapped[str | None] = mapped_column(String(PAYMENT_REFERENCE_MAX_LEN), index=True)
