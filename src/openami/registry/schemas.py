"""Request and response bodies of the registry API.

Request bodies hold plain types and forbid unknown fields; the domain checks (time zone, currency, phases ...)
live once in `registry.validation`, which the service runs. No response carries a meter's auth key.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from openami.registry.models import AccountKind, MeterRole


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class SiteCreate(_Request):
    code: str = Field(description="Short unique code, e.g. 'KSM': letters, digits, '.', '_', '-'.")
    name: str
    timezone: str = Field(description="IANA time zone, e.g. 'Africa/Nairobi'.")
    currency: str = Field(description="ISO 4217 code, e.g. 'KES'.")
    holiday_country: str = Field(description="ISO 3166-1 alpha-2 country for legal holidays, e.g. 'KE'.")
    holiday_subdivision: str | None = Field(None, description="A subdivision the holidays package knows.")


class SiteOut(_Response):
    id: int
    code: str
    name: str
    timezone: str
    currency: str
    holiday_country: str
    holiday_subdivision: str | None
    created_at: datetime


class CustomerCreate(_Request):
    site_id: int
    reference: str = Field(description="The utility's customer number, unique within the site.")
    name: str
    email: str | None = None
    phone: str | None = None


class CustomerOut(_Response):
    id: int
    site_id: int
    reference: str
    name: str
    email: str | None
    phone: str | None


class AccountCreate(_Request):
    site_id: int
    customer_id: int
    number: str = Field(description="Account number, unique within the site.")
    kind: AccountKind


class AccountOut(_Response):
    id: int
    site_id: int
    customer_id: int
    number: str
    kind: AccountKind


class TransformerCreate(_Request):
    site_id: int
    code: str
    rating_kva: int = Field(description="Nameplate rating, kVA.")
    check_meter_id: int | None = Field(
        None, description="A meter of role 'check' measuring the total output."
    )


class TransformerOut(_Response):
    id: int
    site_id: int
    code: str
    rating_kva: int
    check_meter_id: int | None


class ServicePointCreate(_Request):
    site_id: int
    code: str
    rated_current_a: int = Field(description="Fuse or contract rating of the service, A.")
    phases: int = Field(1, description="1 or 3.")
    address: str = ""
    account_id: int | None = None
    transformer_id: int | None = None


class ServicePointOut(_Response):
    id: int
    site_id: int
    code: str
    account_id: int | None
    transformer_id: int | None
    address: str
    phases: int
    rated_current_a: int


class MeterCreate(_Request):
    site_id: int
    serial: str
    model: str
    rated_current_a: int = Field(description="The meter's Imax, A.")
    # SecretStr keeps the key out of reprs and logs of the request body.
    auth_key: SecretStr = Field(
        description="The meter's 32-byte HMAC key as 64 hexadecimal characters. Never returned."
    )
    phases: int = Field(1, description="1 or 3.")
    protocol: str = "senml-mqtt"
    role: MeterRole = MeterRole.CUSTOMER
    load_profile_interval_s: int = Field(900, description="300, 600, 900, 1800 or 3600 s.")
    service_point_id: int | None = None
    installed_at: datetime | None = Field(None, description="ISO 8601 with a UTC offset; not in the future.")


class MeterOut(_Response):
    id: int
    serial: str
    site_id: int
    site_code: str
    timezone: str
    model: str
    protocol: str
    role: MeterRole
    phases: int
    rated_current_a: int
    service_rated_current_a: int | None
    max_power_w: float = Field(
        description="phases × 230 V × the lower of the meter's and the service's rating, W."
    )
    load_profile_interval_s: int
    service_point_id: int | None
    account_id: int | None
    transformer_id: int | None
    installed_at: datetime | None
    previous_key_until: datetime | None = Field(
        None, description="until when the meter's previous key is still accepted after a rotation (UTC)"
    )


class MeterKeyIn(_Request):
    """A new frame-authentication key for a meter (from its maker, or loaded into it in the field)."""

    auth_key: SecretStr = Field(
        description="64 hexadecimal digits (32 bytes). Stored sealed; never shown again."
    )
    grace_hours: int = Field(
        72, ge=0, le=2160, description="hours the current key stays accepted (frames in flight, field work)"
    )
    reason: str = Field(min_length=1, max_length=500, description="why the key changes (kept in the log)")
