"""Request and response bodies of the sign-in, people and operation-log API. No response carries a password, a
password hash, a TOTP secret (except once, to the person enrolling) or an API token's secret (except once, at issue)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from openami.security.models import Role


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class LoginIn(_Request):
    username: str = Field(max_length=150)
    password: SecretStr = Field(max_length=1024)
    totp_code: str | None = Field(None, max_length=10, description="The 6 digits of the authenticator app.")


class GrantOut(_Response):
    role: Role
    site_id: int


class MeOut(_Response):
    user_id: int
    username: str
    display_name: str
    grants: list[GrantOut]
    customer_ids: list[int]
    via: str = Field(description="'session' (browser) or 'token' (API token)")
    token_id: int | None


class LoginOut(MeOut):
    csrf_token: str = Field(
        description="Send it back in the X-CSRF-Token header of every state-changing request."
    )
    expires_at: datetime


class PasswordChangeIn(_Request):
    current_password: SecretStr = Field(max_length=1024)
    new_password: SecretStr = Field(max_length=1024)


class TokenIn(_Request):
    name: str = Field(max_length=100)
    roles: list[Role] = Field(min_length=1, max_length=len(Role))
    site_ids: list[int] = Field(min_length=1, max_length=1000)
    ttl_days: int = Field(ge=1, le=366)


class TokenOut(_Response):
    id: int
    name: str
    prefix: str
    roles: list[str]
    site_ids: list[int]
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


class IssuedTokenOut(TokenOut):
    secret: str = Field(description="Shown this once: only its hash is stored.")


class UserIn(_Request):
    username: str = Field(max_length=150)
    display_name: str = Field(max_length=200)
    password: SecretStr = Field(
        max_length=1024, description="The first password; the person should change it."
    )


class UserOut(_Response):
    id: int
    username: str
    display_name: str
    created_at: datetime
    disabled: bool
    totp_enrolled: bool


class UserDetailOut(UserOut):
    grants: list[GrantOut]
    customer_ids: list[int]


class GrantIn(_Request):
    role: Role
    site_id: int = Field(ge=1, le=2**31 - 1)


class CustomerLinkIn(_Request):
    customer_id: int = Field(ge=1, le=2**31 - 1)


class PasswordResetIn(_Request):
    new_password: SecretStr = Field(max_length=1024)
    reason: str = Field(min_length=1, max_length=500)


class DisableIn(_Request):
    disabled: bool
    reason: str = Field(min_length=1, max_length=500)


class TotpEnrollmentOut(BaseModel):
    secret: str = Field(description="Shown this once, to load into the authenticator app.")
    uri: str = Field(description="otpauth:// URI, for a QR code.")


class AuditEntryOut(_Response):
    id: int
    at: datetime
    site_id: int | None
    actor: str
    role: str
    address: str | None
    action: str
    object_type: str
    object_id: str
    before: Any
    after: Any
    reason: str | None
    hash: str
