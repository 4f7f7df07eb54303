"""Tables of people and their access: users, their roles per site, and API tokens (stored hashed)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Enum, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from openami.storage.base import Base, UTCDateTime


class Role(enum.StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"  # meters and relay commands
    BILLING = "billing"  # tariffs, bills, payments
    FIELD_TECHNICIAN = "field_technician"  # assigned meters and cases
    AUDITOR = "auditor"  # reads everything, changes nothing
    CUSTOMER = "customer"  # only their own accounts


# Roles that can cut power, change a tariff or move money: logging in with one of them needs a second factor.
SECOND_FACTOR_ROLES = frozenset({Role.ADMIN, Role.OPERATOR, Role.BILLING})


def _enum_values(kind: type[enum.StrEnum]) -> list[str]:
    return [member.value for member in kind]


class AppUser(Base):
    __tablename__ = "app_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)  # stored lower-case
    display_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(255))  # argon2id, PHC string form
    totp_secret: Mapped[str | None] = mapped_column(String(64))  # base32
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)  # RFC 6238 step of the last code accepted
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class UserRole(Base):
    __tablename__ = "user_role"

    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[Role] = mapped_column(
        Enum(Role, native_enum=False, length=32, values_callable=_enum_values), primary_key=True
    )
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), primary_key=True, index=True)


class ApiToken(Base):
    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 of the whole secret, hex
    prefix: Mapped[str] = mapped_column(String(8))  # shown in lists so a person can tell their tokens apart
    scopes: Mapped[str] = mapped_column(Text)  # JSON: {"roles": [...], "site_ids": [...]}
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class UserCustomer(Base):
    """A person who may see a registry customer's accounts (with the customer role on that customer's site)."""

    __tablename__ = "user_customer"

    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id", ondelete="CASCADE"), primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), primary_key=True, index=True)


class WebSession(Base):
    """A browser's signed-in session. The cookie holds a random secret; only its SHA-256 is stored, with the
    SHA-256 of the session's CSRF token (sent back in a header on every state-changing request)."""

    __tablename__ = "web_session"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())  # absolute end, however active
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())  # idle sessions end too
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(200))


class LoginFailure(Base):
    """Consecutive failed sign-ins at one username from one address ("" when unknown), and the lock they earned.

    Keyed by address so that an attacker's guesses lock the attacker's address out of the account, not the real
    person signing in from elsewhere; keyed by the name as typed (lower-case) so that guesses at names that do
    not exist count too, towards the throttle on an address spraying many names.
    """

    __tablename__ = "login_failure"

    username: Mapped[str] = mapped_column(String(150), primary_key=True)
    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
