"""What other contexts learn about the registry: plain values, never the registry's tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

NOMINAL_VOLTAGE_V = 230.0


@dataclass(frozen=True, slots=True)
class MeterInfo:
    id: int
    serial: str
    site_id: int
    site_code: str
    timezone: str  # IANA zone of the meter's site
    phases: int
    rated_current_a: int  # the meter's Imax
    service_rated_current_a: int | None  # the service point's rating, when the meter is installed at one
    load_profile_interval_s: int
    # 32-byte HMAC key, in plaintext (the registry stores it sealed): kept out of repr so that logging a
    # MeterInfo never leaks it.
    auth_key: bytes = field(repr=False)
    installed_at: datetime | None
    account_id: int | None
    # The service point's transformer; for a check meter, the transformer whose total it measures.
    transformer_id: int | None
    model: str = ""
    protocol: str = "senml-mqtt"
    role: str = "customer"  # "customer" (one service point) or "check" (a transformer's total)
    service_point_id: int | None = None
    # After a key rotation, the key before it: frames signed with it are still accepted until
    # `previous_key_until` (UTC), by the head-end's clock. Both None when there is none, or its grace is over.
    previous_auth_key: bytes | None = field(default=None, repr=False)
    previous_key_until: datetime | None = None

    @property
    def max_power_w(self) -> float:
        """The most power the service can draw: phases × nominal voltage × the lower current rating."""
        current_a = min(self.rated_current_a, self.service_rated_current_a or self.rated_current_a)
        return self.phases * NOMINAL_VOLTAGE_V * current_a


@dataclass(frozen=True, slots=True)
class SiteInfo:
    """One utility or mini-grid: its local time zone, currency and legal-holiday calendar."""

    id: int
    code: str
    name: str
    timezone: str  # IANA name
    currency: str  # ISO 4217
    holiday_country: str  # ISO 3166-1 alpha-2, as the `holidays` package knows it
    holiday_subdivision: str | None
    created_at: datetime  # UTC


@dataclass(frozen=True, slots=True)
class CustomerInfo:
    id: int
    site_id: int
    reference: str  # the utility's customer number, unique within the site
    name: str
    email: str | None
    phone: str | None


@dataclass(frozen=True, slots=True)
class AccountInfo:
    id: int
    site_id: int
    customer_id: int
    number: str  # unique within the site
    kind: str  # "postpaid" or "prepaid"


@dataclass(frozen=True, slots=True)
class TransformerInfo:
    id: int
    site_id: int
    code: str
    rating_kva: int
    check_meter_id: int | None  # the meter measuring the transformer's total output


@dataclass(frozen=True, slots=True)
class ServicePointInfo:
    id: int
    site_id: int
    code: str
    account_id: int | None
    transformer_id: int | None
    address: str
    phases: int
    rated_current_a: int  # the service's fuse / contract rating
