"""Pydantic schemas of the readings API. Instants are UTC ISO-8601; each answer names the site's time zone."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from openami.common.obis import ACTIVE_IMPORT_INTERVAL


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class InstantOut(_Out):
    obis: str
    name: str
    unit: str = Field(description="SenML unit: W, V, A, or empty for a state")
    value: float
    read_at: datetime = Field(description="when the meter measured it, UTC")
    received_at: datetime = Field(description="when the head-end received it, UTC")


class MeterInstantsOut(_Out):
    serial: str
    timezone: str = Field(description="IANA time zone of the meter's site")
    values: list[InstantOut]


class SeriesPointOut(_Out):
    start: datetime = Field(description="bucket start, UTC")
    end: datetime = Field(description="bucket end (exclusive), UTC")
    local_start: str = Field(description="bucket start in the site's time zone, ISO-8601 with offset")
    energy_wh: int
    expected: int = Field(description="intervals expected in the bucket (after installation, already over)")
    actual: int
    estimated: int
    edited: int
    missing: int
    flags: list[str] = Field(description="VEE rules raised on any interval of the bucket")


class SeriesOut(_Out):
    serial: str
    timezone: str
    obis: str
    resolution: str
    unit: str = "Wh"
    start: datetime
    end: datetime
    points: list[SeriesPointOut]


class RegisterReadOut(_Out):
    obis: str
    read_at: datetime
    energy_wh: int
    source: str
    version: int


class RegistersOut(_Out):
    serial: str
    timezone: str
    reads: list[RegisterReadOut]


class CompletenessDayOut(_Out):
    day: date = Field(description="site-local day")
    expected: int
    actual: int
    estimated: int
    edited: int
    missing: int
    percent: float = Field(description="(actual + edited) / expected × 100")


class CompletenessOut(_Out):
    serial: str
    timezone: str
    obis: str
    days: list[CompletenessDayOut]


class FlagOut(_Out):
    id: int
    obis: str
    rule: str
    start: datetime
    end: datetime
    reason: str
    raised_at: datetime
    cleared_at: datetime | None


class FlagsOut(_Out):
    serial: str
    timezone: str
    flags: list[FlagOut]


class IntervalEdit(BaseModel):
    """An operator's correction of one interval. The reason is mandatory and kept with the value."""

    model_config = ConfigDict(extra="forbid")

    energy_wh: int = Field(ge=0, description="the corrected energy of the interval, Wh")
    reason: str = Field(max_length=500, description="why the value is changed (required, not blank)")
    obis: str = Field(default=ACTIVE_IMPORT_INTERVAL, description="the load-profile quantity")

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty: say why the value is changed and who changes it")
        return value.strip()


class IntervalEditOut(_Out):
    serial: str
    obis: str
    interval_start: datetime
    energy_wh: int
    quality: str
    version: int
