"""Relay control over HTTP under /api/v1: commands to one meter or many, cancelling them, a site's safety policy,
supply protections of an account and weather emergencies of a site.

Staff only: `relay:read` to look, `relay:operate` to switch supply and to protect or unprotect it,
`control-policy:write` to change when a site may be cut off. ControlService writes every change to the operation
log (with the caller as actor and the roles they acted with) in the route's transaction, committed here. A
disconnect the safety policy refuses is kept as a `failed` command and answered 409 with the rule and until when.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from openami.api.auth import Access, require
from openami.api.deps import ContainerDep, RowId, SessionDep
from openami.bootstrap import Container
from openami.common.errors import ConflictError, NotFoundError, ValidationError
from openami.control.interfaces import (
    BulkOperationInfo,
    CommandKind,
    CommandState,
    EmergencyInfo,
    ProtectionInfo,
    RelayCommandInfo,
    SitePolicyInfo,
)
from openami.control.models import SupplyProtection, WeatherEmergency
from openami.control.service import MAX_KEY_CHARS, PROTECTION_KINDS
from openami.headend.codec import MAX_LOAD_LIMIT_W
from openami.registry.interfaces import MeterInfo
from openami.security.permissions import Permission

router = APIRouter(prefix="/api/v1", tags=["relay control"])
RelayRead = Annotated[Access, require(Permission.RELAY_READ)]
RelayOperate = Annotated[Access, require(Permission.RELAY_OPERATE)]
Reason = Annotated[str, Field(min_length=1, max_length=500, description="why: kept in the operation log")]
RequestKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_KEY_CHARS,
        description="your idempotency key: repeating it returns the command made the first time",
    ),
]
MAX_BULK_METERS = 10_000


LimitW = Annotated[
    int | None,
    Field(
        default=None, ge=0, le=MAX_LOAD_LIMIT_W, description="set_load_limit only: watts, 0 lifts the limit"
    ),
]


class CommandIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: CommandKind
    request_key: RequestKey
    reason: Reason
    limit_w: LimitW = None


class CommandOut(BaseModel):
    id: int
    site_id: int
    serial: str
    kind: CommandKind
    state: CommandState
    request_key: str
    actor: str
    reason: str
    created_at: datetime
    expires_at: datetime = Field(description="unsent by then: expired; sent but unreported: unconfirmed")
    attempts: int
    next_attempt_at: datetime | None
    first_sent_at: datetime | None
    last_sent_at: datetime | None
    finished_at: datetime | None
    bulk_id: int | None
    refused_rule: str | None = Field(description="the safety rule that refused a disconnect")
    refused_until: datetime | None = Field(description="when that rule stops refusing (null: no known end)")
    reported_connected: bool | None = Field(description="the relay state the meter reported")
    limit_w: int | None = Field(description="the load limit asked for (set_load_limit)")
    detail: str


class BulkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    serials: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=MAX_BULK_METERS
    )
    kind: CommandKind
    request_key: RequestKey
    reason: Reason
    limit_w: LimitW = None
    per_minute: int | None = Field(
        default=None, ge=1, le=100_000, description="at most this many sent a minute (default: the site's)"
    )


class BulkOut(BaseModel):
    id: int
    site_id: int
    kind: CommandKind
    request_key: str
    per_minute: int
    actor: str
    reason: str
    created_at: datetime
    cancelled_at: datetime | None
    command_ids: list[int]
    refused: int = Field(description="disconnects the safety policy refused when requested")


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason


class PolicyIn(BaseModel):
    """The settings to change (the others keep their values), and why."""

    model_config = ConfigDict(extra="forbid")
    reason: Reason
    night_start_hour: int | None = Field(default=None, ge=0, le=23, description="local hour night begins")
    night_end_hour: int | None = Field(default=None, ge=0, le=23, description="local hour night ends")
    block_weekends: bool | None = None
    block_holidays: bool | None = None
    commands_per_minute: int | None = Field(default=None, ge=1, description="a bulk operation's default rate")
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    first_retry_s: int | None = Field(default=None, ge=1)
    command_ttl_s: int | None = Field(default=None, ge=1)


class PolicyOut(BaseModel):
    site_id: int
    night_start_hour: int
    night_end_hour: int
    block_weekends: bool
    block_holidays: bool
    commands_per_minute: int
    max_attempts: int
    first_retry_s: int
    command_ttl_s: int
    stored: bool = Field(description="false: these are the defaults")


class ProtectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field(description=f"one of {list(PROTECTION_KINDS)}")
    reason: Reason
    valid_from: AwareDatetime | None = Field(default=None, description="default: now")
    valid_until: AwareDatetime | None = Field(default=None, description="default: until ended")


class ProtectionOut(BaseModel):
    id: int
    account_id: int
    site_id: int
    kind: str
    reason: str
    valid_from: datetime
    valid_until: datetime | None
    created_by: str
    created_at: datetime


class EmergencyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason
    starts_at: AwareDatetime | None = Field(default=None, description="default: now")
    ends_at: AwareDatetime


class EmergencyOut(BaseModel):
    id: int
    site_id: int
    reason: str
    starts_at: datetime
    ends_at: datetime
    declared_by: str
    created_at: datetime


def _command_out(command: RelayCommandInfo, serial: str) -> CommandOut:
    return CommandOut(
        id=command.id,
        site_id=command.site_id,
        serial=serial,
        kind=command.kind,
        state=command.state,
        request_key=command.request_key,
        actor=command.actor,
        reason=command.reason,
        created_at=command.created_at,
        expires_at=command.expires_at,
        attempts=command.attempts,
        next_attempt_at=command.next_attempt_at,
        first_sent_at=command.first_sent_at,
        last_sent_at=command.last_sent_at,
        finished_at=command.finished_at,
        bulk_id=command.bulk_id,
        refused_rule=None if command.refused_rule is None else command.refused_rule.value,
        refused_until=command.refused_until,
        reported_connected=command.reported_connected,
        limit_w=command.limit_w,
        detail=command.detail,
    )


def _bulk_out(bulk: BulkOperationInfo) -> BulkOut:
    return BulkOut(
        id=bulk.id,
        site_id=bulk.site_id,
        kind=bulk.kind,
        request_key=bulk.request_key,
        per_minute=bulk.per_minute,
        actor=bulk.actor,
        reason=bulk.reason,
        created_at=bulk.created_at,
        cancelled_at=bulk.cancelled_at,
        command_ids=list(bulk.command_ids),
        refused=bulk.refused,
    )


def _policy_out(policy: SitePolicyInfo) -> PolicyOut:
    return PolicyOut(
        site_id=policy.site_id,
        night_start_hour=policy.night_start_hour,
        night_end_hour=policy.night_end_hour,
        block_weekends=policy.block_weekends,
        block_holidays=policy.block_holidays,
        commands_per_minute=policy.commands_per_minute,
        max_attempts=policy.max_attempts,
        first_retry_s=policy.first_retry_s,
        command_ttl_s=policy.command_ttl_s,
        stored=policy.stored,
    )


def _protection_out(p: ProtectionInfo) -> ProtectionOut:
    return ProtectionOut(
        id=p.id,
        account_id=p.account_id,
        site_id=p.site_id,
        kind=p.kind,
        reason=p.reason,
        valid_from=p.valid_from,
        valid_until=p.valid_until,
        created_by=p.created_by,
        created_at=p.created_at,
    )


def _emergency_out(e: EmergencyInfo) -> EmergencyOut:
    return EmergencyOut(
        id=e.id,
        site_id=e.site_id,
        reason=e.reason,
        starts_at=e.starts_at,
        ends_at=e.ends_at,
        declared_by=e.declared_by,
        created_at=e.created_at,
    )


def _meter(session: Session, container: Container, access: Access, serial: str) -> MeterInfo:
    try:
        meter = container.registry.meter_by_serial(session, serial)
    except NotFoundError:
        meter = None
    if meter is None or not access.sees_meter(meter):
        raise NotFoundError(f"no meter with serial {serial!r}")  # as for a meter that does not exist
    return meter


def _site(access: Access, site_id: int) -> None:
    if not access.reach.whole_site(site_id):
        raise NotFoundError(f"no site with id {site_id}")


def _command(session: Session, container: Container, access: Access, command_id: int) -> RelayCommandInfo:
    try:
        command = container.control.get(session, command_id)
    except NotFoundError:
        command = None
    if command is None or not access.reach.whole_site(command.site_id):
        raise NotFoundError(f"no relay command with id {command_id}")
    return command


def _serial(session: Session, container: Container, command: RelayCommandInfo) -> str:
    return container.registry.meter_info(session, command.meter_id).serial


def _account_site(session: Session, container: Container, access: Access, account_id: int) -> int:
    try:
        site_id = container.registry.get_account(session, account_id).site_id
    except NotFoundError:
        site_id = None
    if site_id is None or not access.reach.whole_site(site_id):
        raise NotFoundError(f"no account with id {account_id}")
    return site_id


def _key_conflict(key: str) -> ConflictError:
    # Request keys are unique across the whole system: say no more than that the key is taken.
    return ConflictError(f"request key {key!r} was already used for another request: choose a new key")


@router.post("/meters/{serial}/relay-commands", response_model=CommandOut, status_code=202)
def request_command(
    serial: str, body: CommandIn, access: RelayOperate, session: SessionDep, container: ContainerDep
) -> Any:
    """Queue a command for the meter: sent by the dispatcher, done only when the meter reports back. A refused
    disconnect answers 409 naming the rule and when it stops refusing; the refusal is kept and logged."""
    meter = _meter(session, container, access, serial)
    try:
        command = container.control.request(
            session,
            meter_id=meter.id,
            kind=body.kind,
            request_key=body.request_key,
            actor=access.actor,
            role=access.role,
            reason=body.reason,
            limit_w=body.limit_w,
        )
    except ConflictError:
        raise _key_conflict(body.request_key) from None
    session.commit()
    out = _command_out(command, meter.serial)
    if command.refused_rule is not None:
        until = "no known end" if command.refused_until is None else command.refused_until.isoformat()
        return JSONResponse(
            {
                "detail": f"disconnect refused by the safety policy ({command.refused_rule.value}, until "
                f"{until}): {command.detail}",
                "rule": command.refused_rule.value,
                "until": None if command.refused_until is None else command.refused_until.isoformat(),
                "command": out.model_dump(mode="json"),
            },
            status_code=409,
        )
    return out


@router.get("/meters/{serial}/relay-commands", response_model=list[CommandOut])
def meter_commands(
    serial: str,
    access: RelayRead,
    session: SessionDep,
    container: ContainerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """The meter's commands, newest first."""
    meter = _meter(session, container, access, serial)
    commands = container.control.commands_for_meter(session, meter.id, limit=limit)
    return [_command_out(c, meter.serial) for c in commands]


@router.get("/relay-commands/{command_id}", response_model=CommandOut)
def get_command(command_id: RowId, access: RelayRead, session: SessionDep, container: ContainerDep) -> Any:
    command = _command(session, container, access, command_id)
    return _command_out(command, _serial(session, container, command))


@router.post("/relay-commands/{command_id}/cancel", response_model=CommandOut)
def cancel_command(
    command_id: RowId, body: CancelIn, access: RelayOperate, session: SessionDep, container: ContainerDep
) -> Any:
    """Withdraw a command still queued; one already sent cannot be called back (409)."""
    _command(session, container, access, command_id)
    command = container.control.cancel(
        session, command_id, actor=access.actor, role=access.role, reason=body.reason
    )
    session.commit()
    return _command_out(command, _serial(session, container, command))


@router.post("/sites/{site_id}/relay-commands/bulk", response_model=BulkOut, status_code=202)
def request_bulk(
    site_id: RowId, body: BulkIn, access: RelayOperate, session: SessionDep, container: ContainerDep
) -> Any:
    """Queue one command per meter of the site, sent at most `per_minute` a minute; disconnects the policy
    refuses are counted in `refused` and kept as failed commands."""
    _site(access, site_id)
    if len(set(body.serials)) != len(body.serials):
        raise ValidationError("serials repeat in the list", "serials")
    found = container.registry.meters_by_serial(session, body.serials)
    unknown = sorted(s for s in body.serials if s not in found or not access.sees_meter(found[s]))
    if unknown:
        raise ValidationError(f"no meters with serials {unknown[:20]}", "serials")
    elsewhere = sorted(s for s in body.serials if found[s].site_id != site_id)
    if elsewhere:
        raise ValidationError(f"meters {elsewhere[:20]} are not on site {site_id}", "serials")
    try:
        bulk = container.control.request_bulk(
            session,
            meter_ids=[found[s].id for s in body.serials],
            kind=body.kind,
            request_key=body.request_key,
            actor=access.actor,
            role=access.role,
            reason=body.reason,
            per_minute=body.per_minute,
            limit_w=body.limit_w,
        )
    except ConflictError:
        raise _key_conflict(body.request_key) from None
    session.commit()
    return _bulk_out(bulk)


def _bulk(session: Session, container: Container, access: Access, bulk_id: int) -> BulkOperationInfo:
    try:
        bulk = container.control.get_bulk(session, bulk_id)
    except NotFoundError:
        bulk = None
    if bulk is None or not access.reach.whole_site(bulk.site_id):
        raise NotFoundError(f"no bulk operation with id {bulk_id}")
    return bulk


@router.get("/relay-bulk-operations/{bulk_id}", response_model=BulkOut)
def get_bulk(bulk_id: RowId, access: RelayRead, session: SessionDep, container: ContainerDep) -> Any:
    return _bulk_out(_bulk(session, container, access, bulk_id))


@router.post("/relay-bulk-operations/{bulk_id}/cancel", response_model=BulkOut)
def cancel_bulk(
    bulk_id: RowId, body: CancelIn, access: RelayOperate, session: SessionDep, container: ContainerDep
) -> Any:
    """Cancel every command of the operation still queued; those already sent run their course."""
    _bulk(session, container, access, bulk_id)
    bulk = container.control.cancel_bulk(
        session, bulk_id, actor=access.actor, role=access.role, reason=body.reason
    )
    session.commit()
    return _bulk_out(bulk)


@router.get("/sites/{site_id}/control-policy", response_model=PolicyOut)
def get_policy(site_id: RowId, access: RelayRead, session: SessionDep, container: ContainerDep) -> Any:
    """When the site's supply may be cut, and how commands are retried (the defaults until set)."""
    _site(access, site_id)
    return _policy_out(container.control.get_policy(session, site_id))


@router.put("/sites/{site_id}/control-policy", response_model=PolicyOut)
def set_policy(
    site_id: RowId,
    body: PolicyIn,
    access: Annotated[Access, require(Permission.CONTROL_POLICY_WRITE)],
    session: SessionDep,
    container: ContainerDep,
) -> Any:
    """Change the settings given; the others keep their values."""
    _site(access, site_id)
    settings = body.model_dump(exclude_unset=True, exclude={"reason"})
    nulls = sorted(name for name, value in settings.items() if value is None)
    if nulls:
        raise ValidationError(f"give a value or leave the setting out, not null: {nulls}", "policy")
    policy = container.control.set_policy(
        session, site_id, actor=access.actor, role=access.role, reason=body.reason, **settings
    )
    session.commit()
    return _policy_out(policy)


@router.post("/accounts/{account_id}/supply-protections", response_model=ProtectionOut, status_code=201)
def add_protection(
    account_id: RowId, body: ProtectionIn, access: RelayOperate, session: SessionDep, container: ContainerDep
) -> Any:
    """Protect the account from disconnection (medical priority, a vulnerable household) while valid."""
    _account_site(session, container, access, account_id)
    protection = container.control.add_protection(
        session,
        account_id=account_id,
        kind=body.kind,
        reason=body.reason,
        valid_from=body.valid_from or container.clock.now(),
        valid_until=body.valid_until,
        actor=access.actor,
        role=access.role,
    )
    session.commit()
    return _protection_out(protection)


@router.delete("/accounts/{account_id}/supply-protections/{protection_id}", response_model=ProtectionOut)
def end_protection(
    account_id: RowId,
    protection_id: RowId,
    reason: Annotated[str, Query(min_length=1, max_length=500, description="why it ends")],
    access: RelayOperate,
    session: SessionDep,
    container: ContainerDep,
) -> Any:
    """End the protection now: the account may be disconnected again under the site's policy."""
    _account_site(session, container, access, account_id)
    row = session.get(SupplyProtection, protection_id)
    if row is None or row.account_id != account_id:
        raise NotFoundError(f"no supply protection with id {protection_id} on account {account_id}")
    now = container.clock.now()
    at = max(now, row.valid_from + timedelta(microseconds=1))  # one not begun yet ends as it begins
    protection = container.control.end_protection(
        session, protection_id, at=at, actor=access.actor, role=access.role, reason=reason
    )
    session.commit()
    return _protection_out(protection)


@router.post("/sites/{site_id}/weather-emergencies", response_model=EmergencyOut, status_code=201)
def declare_emergency(
    site_id: RowId, body: EmergencyIn, access: RelayOperate, session: SessionDep, container: ContainerDep
) -> Any:
    """No disconnects at the site from `starts_at` to `ends_at`."""
    _site(access, site_id)
    emergency = container.control.declare_emergency(
        session,
        site_id=site_id,
        reason=body.reason,
        starts_at=body.starts_at or container.clock.now(),
        ends_at=body.ends_at,
        actor=access.actor,
        role=access.role,
    )
    session.commit()
    return _emergency_out(emergency)


@router.delete("/sites/{site_id}/weather-emergencies/{emergency_id}", response_model=EmergencyOut)
def end_emergency(
    site_id: RowId,
    emergency_id: RowId,
    reason: Annotated[str, Query(min_length=1, max_length=500, description="why it ends early")],
    access: RelayOperate,
    session: SessionDep,
    container: ContainerDep,
) -> Any:
    """End the emergency now (or, for one not begun, cancel it: it ends as it begins)."""
    _site(access, site_id)
    row = session.get(WeatherEmergency, emergency_id)
    if row is None or row.site_id != site_id:
        raise NotFoundError(f"no weather emergency with id {emergency_id} at site {site_id}")
    at = max(container.clock.now(), row.starts_at + timedelta(microseconds=1))
    emergency = container.control.end_emergency(
        session, emergency_id, at=at, actor=access.actor, role=access.role, reason=reason
    )
    session.commit()
    return _emergency_out(emergency)
