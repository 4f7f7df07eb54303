"""What other contexts learn about the registry: plain values, never the registry's tables."""

from __future__ import annotations

from dataclasses import dataclass
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
    auth_key: bytes
    installed_at: datetime | None
    account_id: int | None
    transformer_id: int | None

    @property
    def max_power_w(self) -> float:
        """The most power the service can draw: phases × nominal voltage × the lower of the two current ratings."""
        current_a = min(self.rated_current_a, self.service_rated_current_a or self.rated_current_a)
        return self.phases * NOMINAL_VOLTAGE_V * current_a
