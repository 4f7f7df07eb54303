"""The meter itself: metrology, registers per tariff rate, relay, event log and load-profile memory kept twice
with CRCs, on a drifting clock. Pure Python driven by the caller's true instants; it knows no transport or
database."""

from openami.device.config import LOAD_PROFILE_INTERVALS_S, MeterConfig
from openami.device.events import IDIS_EVENT_NUMBERS, Event, EventCode
from openami.device.meter import Meter, PoweredDownError
from openami.device.metrology import Sample, active_power_w, energy_wh
from openami.device.profile import ProfileEntry, Status
from openami.device.registers import (
    ActivityCalendar,
    DayProfile,
    Season,
    WeekProfile,
    default_calendar,
    tariff_rate_window,
)

__all__ = [
    "IDIS_EVENT_NUMBERS",
    "LOAD_PROFILE_INTERVALS_S",
    "ActivityCalendar",
    "DayProfile",
    "Event",
    "EventCode",
    "Meter",
    "MeterConfig",
    "PoweredDownError",
    "ProfileEntry",
    "Sample",
    "Season",
    "Status",
    "WeekProfile",
    "active_power_w",
    "default_calendar",
    "energy_wh",
    "tariff_rate_window",
]
