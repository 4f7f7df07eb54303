"""Registry tables. Everything belongs to exactly one site."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    Enum,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from openami.storage.base import Base, UTCDateTime

# A sealed meter key is 2 + key id (at most 32) + 12 + 48 bytes (security.meter_keys).
SEALED_KEY_MAX_BYTES = 128


def _enum_values(kind: type[enum.StrEnum]) -> list[str]:
    """Store an enum by its value ("prepaid"), as the API and CSV spell it, not by its Python name."""
    return [member.value for member in kind]


class AccountKind(enum.StrEnum):
    POSTPAID = "postpaid"
    PREPAID = "prepaid"


class MeterRole(enum.StrEnum):
    CUSTOMER = "customer"  # measures one service point
    CHECK = "check"  # measures the total at a transformer


class Site(Base):
    __tablename__ = "site"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))  # IANA name, e.g. "Africa/Nairobi"
    currency: Mapped[str] = mapped_column(String(3))  # ISO 4217
    holiday_country: Mapped[str] = mapped_column(String(2))  # ISO 3166-1 alpha-2, for the `holidays` package
    # Long enough for any subdivision the `holidays` package names (the longest, "São Paulo Capital", is 17).
    holiday_subdivision: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Customer(Base):
    __tablename__ = "customer"
    __table_args__ = (UniqueConstraint("site_id", "reference"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    reference: Mapped[str] = mapped_column(String(60))  # the utility's customer number
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(32))


class Account(Base):
    __tablename__ = "account"
    __table_args__ = (UniqueConstraint("site_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), index=True)
    number: Mapped[str] = mapped_column(String(60))
    kind: Mapped[AccountKind] = mapped_column(
        Enum(AccountKind, native_enum=False, length=16, values_callable=_enum_values)
    )


class Transformer(Base):
    __tablename__ = "transformer"
    __table_args__ = (UniqueConstraint("site_id", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    code: Mapped[str] = mapped_column(String(60))
    rating_kva: Mapped[int] = mapped_column(Integer)
    # The meter measuring the transformer's total output; unique so one meter checks one transformer.
    check_meter_id: Mapped[int | None] = mapped_column(ForeignKey("meter.id", use_alter=True), unique=True)


class ServicePoint(Base):
    __tablename__ = "service_point"
    __table_args__ = (
        UniqueConstraint("site_id", "code"),
        CheckConstraint("phases IN (1, 3)", name="phases"),
        CheckConstraint("rated_current_a > 0", name="rated_current_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    code: Mapped[str] = mapped_column(String(60))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"), index=True)
    transformer_id: Mapped[int | None] = mapped_column(ForeignKey("transformer.id"), index=True)
    address: Mapped[str] = mapped_column(String(300), default="")
    phases: Mapped[int] = mapped_column(Integer, default=1)
    rated_current_a: Mapped[int] = mapped_column(Integer)  # the service's fuse / contract rating


class Meter(Base):
    __tablename__ = "meter"
    __table_args__ = (
        CheckConstraint("phases IN (1, 3)", name="phases"),
        CheckConstraint("rated_current_a > 0", name="rated_current_positive"),
        CheckConstraint("load_profile_interval_s IN (300, 600, 900, 1800, 3600)", name="profile_interval"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    serial: Mapped[str] = mapped_column(String(40), unique=True)
    model: Mapped[str] = mapped_column(String(80))
    phases: Mapped[int] = mapped_column(Integer, default=1)
    rated_current_a: Mapped[int] = mapped_column(Integer)  # Imax of the meter
    protocol: Mapped[str] = mapped_column(String(20), default="senml-mqtt")
    role: Mapped[MeterRole] = mapped_column(
        Enum(MeterRole, native_enum=False, length=16, values_callable=_enum_values),
        default=MeterRole.CUSTOMER,
    )
    # The meter's HMAC-SHA256 key for frame authentication, sealed (AES-256-GCM under a master key, see
    # security.meter_keys); a bare 32-byte value is a legacy plaintext key from before migration 0004, until
    # `openami keys seal-legacy` seals it. Never read these columns directly: RegistryService opens them.
    auth_key: Mapped[bytes] = mapped_column(LargeBinary(SEALED_KEY_MAX_BYTES))
    # After a rotation, the key before it (sealed), still accepted until `previous_key_until` (UTC) so that
    # frames in flight and meters not yet re-keyed in the field are not refused.
    previous_auth_key: Mapped[bytes | None] = mapped_column(LargeBinary(SEALED_KEY_MAX_BYTES))
    previous_key_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    load_profile_interval_s: Mapped[int] = mapped_column(Integer, default=900)
    service_point_id: Mapped[int | None] = mapped_column(ForeignKey("service_point.id"), unique=True)
    installed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
