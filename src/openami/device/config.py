"""What a meter is: its nameplate and settings, checked once when made."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from openami.device.clock import MAX_DRIFT_PPM
from openami.device.registers import ActivityCalendar, default_calendar

LOAD_PROFILE_INTERVALS_S = (300, 600, 900, 1800, 3600)


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class MeterConfig:
    """What a meter is: serial, phases, Imax A, nominal voltage V, load-profile interval s and capacity
    (entries), RTC drift ppm (+ fast, - slow), activity calendar and the site's IANA time zone (the calendar's
    local time)."""

    serial: str
    phases: int = 1
    rated_current_a: int = 60
    nominal_voltage_v: float = 230.0
    load_profile_interval_s: int = 900
    profile_capacity: int = 96 * 62
    clock_drift_ppm: float = 0.0
    calendar: ActivityCalendar = field(default_factory=default_calendar)
    timezone: str = "UTC"
    event_log_capacity: int = 500

    def __post_init__(self) -> None:
        def fail(name: str, rule: str) -> ValueError:
            return ValueError(f"MeterConfig.{name} {rule}, got {getattr(self, name)!r}")

        if not isinstance(self.serial, str) or not self.serial.strip():
            raise fail("serial", "must be a non-empty string")
        if not is_int(self.phases) or self.phases not in (1, 3):
            raise fail("phases", "must be 1 or 3")
        if not is_int(self.rated_current_a) or self.rated_current_a <= 0:
            raise fail("rated_current_a", "must be a positive whole number of amperes")
        if not is_number(self.nominal_voltage_v) or self.nominal_voltage_v <= 0:
            raise fail("nominal_voltage_v", "must be a positive number of volts")
        if (
            not is_int(self.load_profile_interval_s)
            or self.load_profile_interval_s not in LOAD_PROFILE_INTERVALS_S
        ):
            raise fail("load_profile_interval_s", f"must be one of {LOAD_PROFILE_INTERVALS_S} seconds")
        if not is_int(self.profile_capacity) or self.profile_capacity < 1:
            raise fail("profile_capacity", "must be a whole number of entries, at least 1")
        if not is_number(self.clock_drift_ppm) or abs(self.clock_drift_ppm) > MAX_DRIFT_PPM:
            raise fail("clock_drift_ppm", f"must be a number within ±{MAX_DRIFT_PPM:g} ppm")
        if not isinstance(self.calendar, ActivityCalendar):
            raise fail("calendar", "must be an ActivityCalendar")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
            raise fail("timezone", "must be an IANA time zone name such as 'Europe/Berlin'") from None
        if not is_int(self.event_log_capacity) or self.event_log_capacity < 1:
            raise fail("event_log_capacity", "must be a whole number of events, at least 1")
