"""Relay control: request commands (policy-checked, idempotent), dispatch them, confirm them from the meter's reports.

The steps are plain methods so that a scheduler or the transactional outbox can drive them:

- `request` / `request_bulk` queue commands (a refused disconnect is recorded as `failed`, naming the rule);
- `send_due` sends what is due through a `CommandSender` (the head-end), retries with exponential backoff, and ends
  commands at their deadline: `unconfirmed` when sent but never reported, `expired` when never handed over;
- `on_relay_report` / `on_reply` / `on_load_limit_report` confirm sent commands from what the meter itself
  reports (see reports.py, which feeds them from the head-end's uplinks in the same transaction).

A meter with a load limit opens its relay by itself when the limit is exceeded. Such an open relay is no remote
disconnection, so for a meter that may have a limit in force a disconnect is confirmed only by a relay report in
the meter's reply (which it sends after carrying the command out), never by a periodic push.

Nothing is ever "done" on the strength of having been sent: only the meter's report confirms. Every transition is
appended to the operation log with its actor and reason. Services never commit: the caller's transaction does.
`send_due` reads, then sends, then writes, so on SQLite its caller should give it a transaction of its own (the
head-end writes its down-link counter on another connection while it sends).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from openami.common.clock import Clock, ensure_aware
from openami.common.errors import ConflictError, NotFoundError, OpenAMIError, ValidationError
from openami.control.interfaces import (
    ACTIVE_STATES,
    RELAY_KINDS,
    BulkOperationInfo,
    CommandKind,
    CommandSender,
    CommandState,
    DispatchResult,
    EmergencyInfo,
    MeterDirectory,
    ProtectionInfo,
    RelayCommandInfo,
    SitePolicyInfo,
)
from openami.control.models import (
    BulkOperation,
    ControlPolicy,
    RelayCommand,
    SupplyProtection,
    WeatherEmergency,
)
from openami.control.policy import Emergency, Protection, Refusal, Rule, SafetyRules, check_disconnect
from openami.headend.codec import (
    MAX_LOAD_LIMIT_W,
    Command,
    format_utc,
    load_limit_command,
    reread_command,
)
from openami.registry.interfaces import MeterInfo
from openami.security.audit import AuditLog

DISPATCHER = "control-dispatcher"  # the actor of transitions the dispatcher makes
SYSTEM_ROLE = "system"
METER_ROLE = "device"
READ_NOW_WINDOW = timedelta(hours=24)  # a read-now asks for the load profile of the last day
MAX_KEY_CHARS = 80  # a bulk operation's key plus "#<meter id>" fits the 100-character column
PROTECTION_KINDS = ("medical", "vulnerable")
_WIRE_NAME = {
    CommandKind.DISCONNECT: "disconnect",
    CommandKind.RECONNECT: "connect",
    CommandKind.SET_CLOCK: "set_clock",
}
DEFAULT_POLICY: dict[str, Any] = {
    "night_start_hour": 17,
    "night_end_hour": 8,
    "block_weekends": True,
    "block_holidays": True,
    "commands_per_minute": 60,
    "max_attempts": 4,
    "first_retry_s": 120,
    "command_ttl_s": 6 * 3600,
}


class ControlService:
    def __init__(self, clock: Clock, meters: MeterDirectory, audit: AuditLog | None = None) -> None:
        self._clock = clock
        self._meters = meters
        self._audit = audit if audit is not None else AuditLog(clock)

    # --- policy, protections, emergencies ----------------------------------------------------------------

    def get_policy(self, session: Session, site_id: int) -> SitePolicyInfo:
        """The site's control settings; the defaults (DEFAULT_POLICY) when none are stored."""
        row = session.get(ControlPolicy, site_id)
        if row is None:
            self._meters.get_site(session, site_id)  # NotFoundError for an unknown site
            return SitePolicyInfo(site_id=site_id, stored=False, **DEFAULT_POLICY)
        return _policy_info(row)

    def set_policy(
        self, session: Session, site_id: int, *, actor: str, role: str, reason: str, **settings: Any
    ) -> SitePolicyInfo:
        """Store the site's settings: any of DEFAULT_POLICY's names; the others keep their current values."""
        unknown = sorted(set(settings) - set(DEFAULT_POLICY))
        if unknown:
            raise ValidationError(f"unknown settings {unknown}; known: {sorted(DEFAULT_POLICY)}", "policy")
        before = self.get_policy(session, site_id)
        values = {name: getattr(before, name) for name in DEFAULT_POLICY} | settings
        for name in ("night_start_hour", "night_end_hour"):
            if not _whole(values[name]) or not 0 <= values[name] <= 23:
                raise ValidationError(f"must be a whole hour 0..23, got {values[name]!r}", name)
        for name in ("commands_per_minute", "max_attempts", "first_retry_s", "command_ttl_s"):
            if not _whole(values[name]) or values[name] < 1:
                raise ValidationError(f"must be a whole number above 0, got {values[name]!r}", name)
        for name in ("block_weekends", "block_holidays"):
            if not isinstance(values[name], bool):
                raise ValidationError(f"must be true or false, got {values[name]!r}", name)
        row = session.get(ControlPolicy, site_id) or ControlPolicy(site_id=site_id)
        for name, value in values.items():
            setattr(row, name, value)
        row.updated_at = self._clock.now()
        row.updated_by = actor
        session.add(row)
        session.flush()
        after = _policy_info(row)
        self._audit.append(
            session,
            actor=actor,
            role=role,
            action="control.policy.set",
            object_type="site",
            object_id=str(site_id),
            before=_policy_json(before),
            after=_policy_json(after),
            reason=reason,
            site_id=site_id,
        )
        return after

    def add_protection(
        self,
        session: Session,
        *,
        account_id: int,
        kind: str,
        reason: str,
        valid_from: datetime,
        valid_until: datetime | None,
        actor: str,
        role: str,
    ) -> ProtectionInfo:
        """Protect `account_id` from disconnection in [valid_from, valid_until) (None: until ended)."""
        if kind not in PROTECTION_KINDS:
            raise ValidationError(f"kind must be one of {PROTECTION_KINDS}, got {kind!r}", "kind")
        if not reason.strip():
            raise ValidationError("a protection needs a reason", "reason")
        valid_from = ensure_aware(valid_from, "valid_from")
        if valid_until is not None and ensure_aware(valid_until, "valid_until") <= valid_from:
            raise ValidationError(
                f"valid_until {format_utc(valid_until)} is not after valid_from {format_utc(valid_from)}",
                "valid_until",
            )
        account = self._meters.get_account(session, account_id)
        row = SupplyProtection(
            account_id=account_id,
            site_id=account.site_id,
            kind=kind,
            reason=reason,
            valid_from=valid_from,
            valid_until=valid_until,
            created_by=actor,
            created_at=self._clock.now(),
        )
        session.add(row)
        session.flush()
        info = _protection_info(row)
        self._audit.append(
            session,
            actor=actor,
            role=role,
            action="control.protection.added",
            object_type="account",
            object_id=str(account_id),
            after=_protection_json(info),
            reason=reason,
            site_id=account.site_id,
        )
        return info

    def end_protection(
        self, session: Session, protection_id: int, *, at: datetime, actor: str, role: str, reason: str
    ) -> ProtectionInfo:
        """End protection `protection_id` at `at` (not after its current end)."""
        row = session.get(SupplyProtection, protection_id)
        if row is None:
            raise NotFoundError(f"no supply protection with id {protection_id}")
        at = ensure_aware(at, "at")
        if at <= row.valid_from:
            raise ValidationError(f"{format_utc(at)} is not after the protection's start", "at")
        before = _protection_info(row)
        if row.valid_until is None or at < row.valid_until:
            row.valid_until = at
        session.flush()
        info = _protection_info(row)
        self._audit.append(
            session,
            actor=actor,
            role=role,
            action="control.protection.ended",
            object_type="account",
            object_id=str(row.account_id),
            before=_protection_json(before),
            after=_protection_json(info),
            reason=reason,
            site_id=row.site_id,
        )
        return info

    def declare_emergency(
        self,
        session: Session,
        *,
        site_id: int,
        reason: str,
        starts_at: datetime,
        ends_at: datetime,
        actor: str,
        role: str,
    ) -> EmergencyInfo:
        """No disconnects at `site_id` in [starts_at, ends_at)."""
        if not reason.strip():
            raise ValidationError("a weather emergency needs a reason", "reason")
        if ensure_aware(ends_at, "ends_at") <= ensure_aware(starts_at, "starts_at"):
            raise ValidationError(f"ends_at {format_utc(ends_at)} is not after starts_at", "ends_at")
        self._meters.get_site(session, site_id)
        row = WeatherEmergency(
            site_id=site_id,
            reason=reason,
            starts_at=starts_at,
            ends_at=ends_at,
            declared_by=actor,
            created_at=self._clock.now(),
        )
        session.add(row)
        session.flush()
        info = _emergency_info(row)
        self._audit.append(
            session,
            actor=actor,
            role=role,
            action="control.emergency.declared",
            object_type="weather_emergency",
            object_id=str(row.id),
            after={"starts_at": format_utc(starts_at), "ends_at": format_utc(ends_at)},
            reason=reason,
            site_id=site_id,
        )
        return info

    def end_emergency(
        self, session: Session, emergency_id: int, *, at: datetime, actor: str, role: str, reason: str
    ) -> EmergencyInfo:
        """End a weather emergency early, at `at`."""
        row = session.get(WeatherEmergency, emergency_id)
        if row is None:
            raise NotFoundError(f"no weather emergency with id {emergency_id}")
        at = ensure_aware(at, "at")
        if at <= row.starts_at:
            raise ValidationError(f"{format_utc(at)} is not after the emergency's start", "at")
        before = format_utc(row.ends_at)
        row.ends_at = min(row.ends_at, at)
        session.flush()
        self._audit.append(
            session,
            actor=actor,
            role=role,
            action="control.emergency.ended",
            object_type="weather_emergency",
            object_id=str(emergency_id),
            before={"ends_at": before},
            after={"ends_at": format_utc(row.ends_at)},
            reason=reason,
            site_id=row.site_id,
        )
        return _emergency_info(row)

    def check_disconnect(self, session: Session, meter_id: int, at: datetime | None = None) -> Refusal | None:
        """Why meter `meter_id` may not be disconnected at `at` (default now), or None when it may."""
        meter = self._meters.meter_info(session, meter_id)
        return self._refusal(session, meter, ensure_aware(at, "at") if at else self._clock.now())

    def _refusal(self, session: Session, meter: MeterInfo, at: datetime) -> Refusal | None:
        site = self._meters.get_site(session, meter.site_id)
        policy = self.get_policy(session, meter.site_id)
        rules = SafetyRules(
            timezone=site.timezone,
            holiday_country=site.holiday_country,
            holiday_subdivision=site.holiday_subdivision,
            night_start_hour=policy.night_start_hour,
            night_end_hour=policy.night_end_hour,
            block_weekends=policy.block_weekends,
            block_holidays=policy.block_holidays,
        )
        protections = []
        if meter.account_id is not None:
            rows = session.scalars(
                select(SupplyProtection).where(
                    SupplyProtection.account_id == meter.account_id,
                    or_(SupplyProtection.valid_until.is_(None), SupplyProtection.valid_until > at),
                )
            )
            protections = [Protection(p.kind, p.reason, p.valid_from, p.valid_until) for p in rows]
        emergencies = [
            Emergency(e.reason, e.starts_at, e.ends_at)
            for e in session.scalars(
                select(WeatherEmergency).where(
                    WeatherEmergency.site_id == meter.site_id, WeatherEmergency.ends_at > at
                )
            )
        ]
        return check_disconnect(at, rules, protections, emergencies)

    # --- requesting ---------------------------------------------------------------------------------------

    def request(
        self,
        session: Session,
        *,
        meter_id: int,
        kind: CommandKind | str,
        request_key: str,
        actor: str,
        role: str,
        reason: str,
        ttl: timedelta | None = None,
        limit_w: int | None = None,
    ) -> RelayCommandInfo:
        """Queue `kind` for meter `meter_id`, or return the command already made under `request_key`.

        `limit_w` (W of import, 0 removes the limit) goes with set_load_limit and with no other kind. The same
        key with a different meter, kind or limit raises ConflictError. A disconnect the safety policy refuses
        now is recorded as `failed` with `refused_rule` and `refused_until` (and returned, not raised), so the
        refusal is kept. A relay command cancels the meter's active relay commands of the other kind: the
        newest intent wins. Unknown meter: NotFoundError.
        """
        kind = _kind(kind)
        _check_key(request_key)
        _check_limit(kind, limit_w)
        existing = session.scalars(
            select(RelayCommand).where(RelayCommand.request_key == request_key)
        ).first()
        if existing is not None:
            if existing.meter_id != meter_id or existing.kind != kind or existing.limit_w != limit_w:
                raise ConflictError(
                    f"request key {request_key!r} was used for {_describe(existing.kind, existing.limit_w)} "
                    f"of meter {existing.meter_id}, not {_describe(kind, limit_w)} of meter {meter_id}"
                )
            return _command_info(existing)
        meter = self._meters.meter_info(session, meter_id)
        policy = self.get_policy(session, meter.site_id)
        row = self._new_command(
            session,
            meter,
            kind,
            request_key,
            actor,
            role,
            reason,
            None,
            ttl or timedelta(seconds=policy.command_ttl_s),
            limit_w,
        )
        return _command_info(row)

    def _new_command(
        self,
        session: Session,
        meter: MeterInfo,
        kind: CommandKind,
        request_key: str,
        actor: str,
        role: str,
        reason: str,
        bulk_id: int | None,
        ttl: timedelta,
        limit_w: int | None = None,
    ) -> RelayCommand:
        if not reason.strip():
            raise ValidationError("a command needs a reason", "reason")
        if (kind in RELAY_KINDS or kind is CommandKind.SET_LOAD_LIMIT) and meter.role != "customer":
            raise ValidationError(
                f"meter {meter.serial} is a {meter.role} meter: it switches no supply", "meter"
            )
        if limit_w is not None and limit_w > meter.max_power_w:
            raise ValidationError(
                f"load limit {limit_w} W is above what meter {meter.serial}'s service can draw "
                f"({meter.max_power_w:.0f} W): it could never trip; use 0 for no limit",
                "limit_w",
            )
        now = self._clock.now()
        if ttl <= timedelta(0):
            raise ValidationError(f"ttl must be positive, got {ttl}", "ttl")
        row = RelayCommand(
            site_id=meter.site_id,
            meter_id=meter.id,
            kind=kind.value,
            state=CommandState.QUEUED.value,
            request_key=request_key,
            actor=actor,
            role=role,
            reason=reason,
            bulk_id=bulk_id,
            created_at=now,
            expires_at=now + ttl,
            attempts=0,
            next_attempt_at=now,
            detail="",
            limit_w=limit_w,
        )
        refusal = self._refusal(session, meter, now) if kind is CommandKind.DISCONNECT else None
        if refusal is not None:
            _refuse(row, refusal, now)
        session.add(row)
        session.flush()
        after = _command_json(row)
        action = "control.command.refused" if refusal else "control.command.queued"
        self._audit.append(
            session,
            actor=actor,
            role=role,
            action=action,
            object_type="relay_command",
            object_id=str(row.id),
            after=after,
            reason=reason if refusal is None else f"{reason}; refused: {refusal.message}",
            site_id=meter.site_id,
        )
        if kind in RELAY_KINDS and refusal is None:
            other = (
                CommandKind.RECONNECT if kind is CommandKind.DISCONNECT else CommandKind.DISCONNECT
            ).value
            older = session.scalars(
                select(RelayCommand)
                .where(
                    RelayCommand.meter_id == meter.id,
                    RelayCommand.kind == other,
                    RelayCommand.state.in_([s.value for s in ACTIVE_STATES]),
                    RelayCommand.id != row.id,
                )
                .order_by(RelayCommand.id)
            ).all()
            for old in older:
                self._finish(
                    session, old, CommandState.CANCELLED, now, actor, role, f"superseded by {kind} #{row.id}"
                )
        return row

    def request_bulk(
        self,
        session: Session,
        *,
        meter_ids: Sequence[int],
        kind: CommandKind | str,
        request_key: str,
        actor: str,
        role: str,
        reason: str,
        per_minute: int | None = None,
        limit_w: int | None = None,
    ) -> BulkOperationInfo:
        """Queue `kind` for every meter of `meter_ids` (one site), sent at most `per_minute` a minute (default:
        the site's `commands_per_minute`); `limit_w` as for `request`. Each command's key is
        `request_key#<meter id>`; its deadline counts from its turn. The same key with different meters, kind
        or limit: ConflictError."""
        kind = _kind(kind)
        _check_key(request_key)
        _check_limit(kind, limit_w)
        ids = list(meter_ids)
        if not ids:
            raise ValidationError("a bulk operation needs at least one meter", "meter_ids")
        if len(set(ids)) != len(ids):
            raise ValidationError("meter ids repeat in the list", "meter_ids")
        existing = session.scalars(
            select(BulkOperation).where(BulkOperation.request_key == request_key)
        ).first()
        if existing is not None:
            info = self._bulk_info(session, existing)
            made = session.execute(
                select(RelayCommand.meter_id, RelayCommand.limit_w).where(RelayCommand.bulk_id == existing.id)
            ).all()
            same_meters = sorted(m for m, _ in made) == sorted(ids)
            if existing.kind != kind or not same_meters or any(w != limit_w for _, w in made):
                raise ConflictError(
                    f"request key {request_key!r} was used for a bulk {existing.kind} of other meters or kind"
                )
            return info
        meters = [self._meters.meter_info(session, m) for m in ids]
        site_ids = {m.site_id for m in meters}
        if len(site_ids) != 1:
            raise ValidationError(
                f"a bulk operation covers one site; these meters are in {sorted(site_ids)}", "meter_ids"
            )
        site_id = site_ids.pop()
        policy = self.get_policy(session, site_id)
        rate = policy.commands_per_minute if per_minute is None else per_minute
        if not _whole(rate) or rate < 1:
            raise ValidationError(f"must be a whole number above 0, got {rate!r}", "per_minute")
        bulk = BulkOperation(
            site_id=site_id,
            kind=kind.value,
            request_key=request_key,
            per_minute=rate,
            actor=actor,
            reason=reason,
            created_at=self._clock.now(),
        )
        session.add(bulk)
        session.flush()
        self._audit.append(
            session,
            actor=actor,
            role=role,
            action="control.bulk.requested",
            object_type="control_bulk_operation",
            object_id=str(bulk.id),
            after={"kind": kind.value, "meters": len(ids), "per_minute": rate}
            | ({} if limit_w is None else {"limit_w": limit_w}),
            reason=reason,
            site_id=site_id,
        )
        for index, meter in enumerate(meters):
            ttl = timedelta(seconds=policy.command_ttl_s) + timedelta(minutes=index // rate)
            self._new_command(
                session, meter, kind, f"{request_key}#{meter.id}", actor, role, reason, bulk.id, ttl, limit_w
            )
        return self._bulk_info(session, bulk)

    def cancel(
        self, session: Session, command_id: int, *, actor: str, role: str, reason: str
    ) -> RelayCommandInfo:
        """Cancel a queued command. A command already sent cannot be called back: ConflictError."""
        row = self._get(session, command_id)
        if row.state == CommandState.CANCELLED:
            return _command_info(row)
        if row.state != CommandState.QUEUED or row.attempts:
            raise ConflictError(
                f"relay command {command_id} is {row.state}, not queued: it cannot be cancelled"
            )
        self._finish(session, row, CommandState.CANCELLED, self._clock.now(), actor, role, reason)
        return _command_info(row)

    def cancel_bulk(
        self, session: Session, bulk_id: int, *, actor: str, role: str, reason: str
    ) -> BulkOperationInfo:
        """Cancel every command of the bulk operation still queued; those already sent run their course."""
        bulk = session.get(BulkOperation, bulk_id)
        if bulk is None:
            raise NotFoundError(f"no bulk operation with id {bulk_id}")
        now = self._clock.now()
        if bulk.cancelled_at is None:
            bulk.cancelled_at = now
            queued = session.scalars(
                select(RelayCommand)
                .where(
                    RelayCommand.bulk_id == bulk_id,
                    RelayCommand.state == CommandState.QUEUED.value,
                    RelayCommand.attempts == 0,
                )
                .order_by(RelayCommand.id)
            ).all()
            for row in queued:
                self._finish(
                    session, row, CommandState.CANCELLED, now, actor, role, f"bulk cancelled: {reason}"
                )
            self._audit.append(
                session,
                actor=actor,
                role=role,
                action="control.bulk.cancelled",
                object_type="control_bulk_operation",
                object_id=str(bulk_id),
                after={"cancelled_commands": len(queued)},
                reason=reason,
                site_id=bulk.site_id,
            )
        session.flush()
        return self._bulk_info(session, bulk)

    def get(self, session: Session, command_id: int) -> RelayCommandInfo:
        return _command_info(self._get(session, command_id))

    def commands_for_meter(
        self, session: Session, meter_id: int, *, limit: int = 100
    ) -> list[RelayCommandInfo]:
        """The meter's commands, newest first."""
        rows = session.scalars(
            select(RelayCommand)
            .where(RelayCommand.meter_id == meter_id)
            .order_by(RelayCommand.id.desc())
            .limit(limit)
        )
        return [_command_info(r) for r in rows]

    def find(self, session: Session, request_key: str) -> RelayCommandInfo | None:
        """The command made under `request_key`, if any (without making one)."""
        row = session.scalars(select(RelayCommand).where(RelayCommand.request_key == request_key)).first()
        return None if row is None else _command_info(row)

    def finished_since(
        self, session: Session, site_id: int, since: datetime, *, actor: str | None = None
    ) -> list[RelayCommandInfo]:
        """The site's commands that ended (confirmed, unconfirmed, failed, expired, cancelled) at or after
        `since`, by `actor` when given, oldest first: what a caller that asked for them settles afterwards."""
        stmt = select(RelayCommand).where(
            RelayCommand.site_id == site_id, RelayCommand.finished_at >= ensure_aware(since, "since")
        )
        if actor is not None:
            stmt = stmt.where(RelayCommand.actor == actor)
        return [
            _command_info(r)
            for r in session.scalars(stmt.order_by(RelayCommand.finished_at, RelayCommand.id))
        ]

    def get_bulk(self, session: Session, bulk_id: int) -> BulkOperationInfo:
        bulk = session.get(BulkOperation, bulk_id)
        if bulk is None:
            raise NotFoundError(f"no bulk operation with id {bulk_id}")
        return self._bulk_info(session, bulk)

    # --- dispatching ----------------------------------------------------------------------------------------

    def send_due(
        self, session: Session, sender: CommandSender, now: datetime | None = None, *, limit: int = 200
    ) -> DispatchResult:
        """One dispatch step: end commands past their deadline, send (or re-send) those due, oldest first, one
        in flight per meter, each bulk operation within its rate. Reads, then sends, then writes (see the module
        docstring)."""
        now = ensure_aware(now, "now") if now is not None else self._clock.now()
        due = session.scalars(
            select(RelayCommand)
            .where(
                RelayCommand.state.in_([s.value for s in ACTIVE_STATES]),
                RelayCommand.next_attempt_at <= now,
            )
            .order_by(RelayCommand.id)
            .limit(limit)
        ).all()
        if not due:
            return DispatchResult()
        first_active = dict(
            session.execute(
                select(RelayCommand.meter_id, func.min(RelayCommand.id))
                .where(
                    RelayCommand.meter_id.in_({r.meter_id for r in due}),
                    RelayCommand.state.in_([s.value for s in ACTIVE_STATES]),
                )
                .group_by(RelayCommand.meter_id)
            ).all()
        )
        budget = self._bulk_budgets(session, {r.bulk_id for r in due if r.bulk_id is not None}, now)
        counts = dict.fromkeys(
            ("sent", "retried", "unconfirmed", "expired", "failed", "waiting_rate_limit"), 0
        )
        endings: list[tuple[RelayCommand, CommandState, str]] = []
        sends: list[tuple[RelayCommand, MeterInfo, Command]] = []
        late_refusals: list[tuple[RelayCommand, Refusal]] = []
        for row in due:
            if now >= row.expires_at:
                if row.state == CommandState.SENT:
                    endings.append((row, CommandState.UNCONFIRMED, _unconfirmed_detail(row)))
                else:
                    endings.append((row, CommandState.EXPIRED, "deadline passed before it could be sent"))
                continue
            if first_active.get(row.meter_id) != row.id:
                continue  # an older command of this meter is still in flight
            if row.attempts == 0 and row.bulk_id is not None:
                if budget.get(row.bulk_id, 0) <= 0:
                    counts["waiting_rate_limit"] += 1
                    continue
                budget[row.bulk_id] -= 1
            meter = self._meters.meter_info(session, row.meter_id)
            if row.kind == CommandKind.DISCONNECT:
                refusal = self._refusal(session, meter, now)
                if refusal is not None:
                    late_refusals.append((row, refusal))
                    continue
            sends.append((row, meter, _wire_command(row, now)))

        outcomes: list[
            tuple[RelayCommand, Command, str | None, bool]
        ] = []  # row, command, error, unknown meter
        for row, meter, command in sends:
            try:
                sender.send_command(meter.serial, command)
            except NotFoundError as exc:
                outcomes.append((row, command, str(exc), True))
            except OpenAMIError as exc:
                outcomes.append((row, command, f"{type(exc).__name__}: {exc}", False))
            else:
                outcomes.append((row, command, None, False))

        policy_cache: dict[int, SitePolicyInfo] = {}
        for row, state, detail in endings:
            counts[state.value] += 1
            self._finish(session, row, state, now, DISPATCHER, SYSTEM_ROLE, detail)
        for row, refusal in late_refusals:
            if row.state == CommandState.QUEUED:
                counts["failed"] += 1
                before = _command_json(row)
                _refuse(row, refusal, now)
                self._log(
                    session, row, before, DISPATCHER, SYSTEM_ROLE, f"refused at sending: {refusal.message}"
                )
            else:  # sent before and not reported: stop retrying, keep listening until the deadline
                before = _command_json(row)
                row.next_attempt_at = row.expires_at
                row.detail = f"retry refused: {refusal.message}"
                self._log(
                    session, row, before, DISPATCHER, SYSTEM_ROLE, row.detail, action="control.command.held"
                )
        for row, command, error, unknown in outcomes:
            policy = policy_cache.get(row.site_id) or self.get_policy(session, row.site_id)
            policy_cache[row.site_id] = policy
            if unknown:
                counts["failed"] += 1
                self._finish(session, row, CommandState.FAILED, now, DISPATCHER, SYSTEM_ROLE, error or "")
                continue
            before = _command_json(row)
            row.attempts += 1
            wait = timedelta(seconds=policy.first_retry_s * 2 ** (row.attempts - 1))
            row.next_attempt_at = (
                row.expires_at if row.attempts >= policy.max_attempts else min(now + wait, row.expires_at)
            )
            if error is not None:
                row.detail = f"attempt {row.attempts} not handed to the head-end: {error}"
                counts["retried"] += 1
                self._log(
                    session,
                    row,
                    before,
                    DISPATCHER,
                    SYSTEM_ROLE,
                    row.detail,
                    action="control.command.send_failed",
                )
                continue
            first = row.state == CommandState.QUEUED
            row.state = CommandState.SENT.value
            row.first_sent_at = row.first_sent_at or now
            row.last_sent_at = now
            row.detail = f"sent as {command.request_id} (attempt {row.attempts} of {policy.max_attempts})"
            counts["sent" if first else "retried"] += 1
            self._log(
                session, row, before, DISPATCHER, SYSTEM_ROLE, row.detail, action="control.command.sent"
            )
        session.flush()
        touched = tuple(r.id for r, _, _ in endings) + tuple(r.id for r, _ in late_refusals)
        return DispatchResult(command_ids=touched + tuple(r.id for r, _, _, _ in outcomes), **counts)

    def _bulk_budgets(self, session: Session, bulk_ids: set[int], now: datetime) -> dict[int, int]:
        """Per bulk operation: how many more of its commands may be sent first within the minute before `now`."""
        if not bulk_ids:
            return {}
        rates = dict(
            session.execute(
                select(BulkOperation.id, BulkOperation.per_minute).where(BulkOperation.id.in_(bulk_ids))
            ).all()
        )
        recent = dict(
            session.execute(
                select(RelayCommand.bulk_id, func.count())
                .where(
                    RelayCommand.bulk_id.in_(bulk_ids),
                    RelayCommand.first_sent_at > now - timedelta(minutes=1),
                )
                .group_by(RelayCommand.bulk_id)
            ).all()
        )
        return {b: rates[b] - recent.get(b, 0) for b in bulk_ids}

    # --- reports from meters --------------------------------------------------------------------------------

    def meters_awaiting_report(self, session: Session, meter_ids: Collection[int]) -> set[int]:
        """Which of `meter_ids` have a relay command sent and not yet confirmed: the only ones whose relay
        reports can confirm anything (every uplink carries one; asking once per batch saves a query a meter)."""
        wanted = sorted(set(meter_ids))
        found: set[int] = set()
        for at in range(0, len(wanted), 1000):
            found.update(
                session.scalars(
                    select(RelayCommand.meter_id).where(
                        RelayCommand.meter_id.in_(wanted[at : at + 1000]),
                        RelayCommand.kind.in_([k.value for k in RELAY_KINDS]),
                        RelayCommand.state == CommandState.SENT.value,
                    )
                )
            )
        return found

    def on_relay_report(
        self, session: Session, meter_id: int, connected: bool, at: datetime, *, in_reply: bool = False
    ) -> list[RelayCommandInfo]:
        """The meter reported its relay `connected` (True) or open at `at` (head-end time): confirm its sent
        relay commands that wanted that state. A report of the other state confirms nothing (retries go on).

        `in_reply`: the report came in the meter's reply to a command, not in a periodic push. An open relay in
        a push does not confirm a disconnect of a meter that may have a load limit in force
        (`load_limit_may_trip`): its limiter may have opened it. The meter's reply to the disconnect (or to a
        retry of it) confirms it instead. A closed relay always confirms a reconnect: the limiter only ever
        recloses a relay it opened itself, never a remote disconnection."""
        at = ensure_aware(at, "at")
        limiter_doubt: bool | None = None  # asked at most once, and only when it matters
        wanted = CommandKind.RECONNECT if connected else CommandKind.DISCONNECT
        rows = session.scalars(
            select(RelayCommand)
            .where(
                RelayCommand.meter_id == meter_id,
                RelayCommand.kind.in_([k.value for k in RELAY_KINDS]),
                RelayCommand.state == CommandState.SENT.value,
            )
            .order_by(RelayCommand.id)
        ).all()
        confirmed = []
        for row in rows:
            if row.first_sent_at is None or at < row.first_sent_at:
                continue  # a report from before the command went out says nothing about it
            row.reported_connected = connected
            if row.kind == CommandKind.DISCONNECT and row.kind == wanted and not in_reply:
                if limiter_doubt is None:
                    limiter_doubt = self.load_limit_may_trip(session, meter_id)
                if limiter_doubt:
                    continue  # maybe a load-limit trip: wait for the meter's reply to the disconnect
            if row.kind == wanted:
                state = "closed (connected)" if connected else "open (disconnected)"
                self._finish(
                    session,
                    row,
                    CommandState.CONFIRMED,
                    at,
                    f"meter:{meter_id}",
                    METER_ROLE,
                    f"meter reports relay {state}",
                )
                confirmed.append(_command_info(row))
        session.flush()
        return confirmed

    def on_reply(self, session: Session, meter_id: int, at: datetime) -> list[RelayCommandInfo]:
        """The meter answered a command at `at`: confirm its oldest sent read-now or set-clock command."""
        at = ensure_aware(at, "at")
        row = session.scalars(
            select(RelayCommand)
            .where(
                RelayCommand.meter_id == meter_id,
                RelayCommand.kind.in_([CommandKind.READ_NOW.value, CommandKind.SET_CLOCK.value]),
                RelayCommand.state == CommandState.SENT.value,
                RelayCommand.first_sent_at <= at,
            )
            .order_by(RelayCommand.id)
        ).first()
        if row is None:
            return []
        self._finish(
            session, row, CommandState.CONFIRMED, at, f"meter:{meter_id}", METER_ROLE, "meter replied"
        )
        session.flush()
        return [_command_info(row)]

    def on_load_limit_report(
        self, session: Session, meter_id: int, limit_w: float, at: datetime
    ) -> list[RelayCommandInfo]:
        """The meter replied at `at` that `limit_w` W is its load limit now (OBIS 0-0:17.0.0): confirm its oldest
        sent set_load_limit when that is the limit it asked for. Another limit confirms nothing: the retry
        goes on, and the command ends unconfirmed if the meter never reports the limit asked for."""
        at = ensure_aware(at, "at")
        row = session.scalars(
            select(RelayCommand)
            .where(
                RelayCommand.meter_id == meter_id,
                RelayCommand.kind == CommandKind.SET_LOAD_LIMIT.value,
                RelayCommand.state == CommandState.SENT.value,
                RelayCommand.first_sent_at <= at,
            )
            .order_by(RelayCommand.id)
        ).first()
        if row is None or row.limit_w != limit_w:
            return []
        self._finish(
            session,
            row,
            CommandState.CONFIRMED,
            at,
            f"meter:{meter_id}",
            METER_ROLE,
            f"meter reports load limit {row.limit_w} W in force",
        )
        session.flush()
        return [_command_info(row)]

    def load_limit_may_trip(self, session: Session, meter_id: int) -> bool:
        """Whether meter `meter_id` may have a load limit in force, as far as control knows: a set_load_limit
        above 0 was sent to it (the meter may have it even if never confirmed) and no later one removing the
        limit was confirmed. A limit set outside control (at the factory, on site) is not known here."""
        removed = session.scalar(
            select(func.max(RelayCommand.id)).where(
                RelayCommand.meter_id == meter_id,
                RelayCommand.kind == CommandKind.SET_LOAD_LIMIT.value,
                RelayCommand.state == CommandState.CONFIRMED.value,
                RelayCommand.limit_w == 0,
            )
        )
        stmt = select(RelayCommand.id).where(
            RelayCommand.meter_id == meter_id,
            RelayCommand.kind == CommandKind.SET_LOAD_LIMIT.value,
            RelayCommand.attempts > 0,
            RelayCommand.limit_w > 0,
        )
        if removed is not None:
            stmt = stmt.where(RelayCommand.id > removed)
        return session.scalars(stmt.limit(1)).first() is not None

    # --- helpers ----------------------------------------------------------------------------------------------

    def _get(self, session: Session, command_id: int) -> RelayCommand:
        row = session.get(RelayCommand, command_id)
        if row is None:
            raise NotFoundError(f"no relay command with id {command_id}")
        return row

    def _finish(
        self,
        session: Session,
        row: RelayCommand,
        state: CommandState,
        at: datetime,
        actor: str,
        role: str,
        reason: str,
    ) -> None:
        before = _command_json(row)
        row.state = state.value
        row.finished_at = at
        row.next_attempt_at = None
        row.detail = reason
        self._log(session, row, before, actor, role, reason)

    def _log(
        self,
        session: Session,
        row: RelayCommand,
        before: dict[str, Any],
        actor: str,
        role: str,
        reason: str,
        *,
        action: str | None = None,
    ) -> None:
        self._audit.append(
            session,
            actor=actor,
            role=role,
            action=action or f"control.command.{row.state}",
            object_type="relay_command",
            object_id=str(row.id),
            before=before,
            after=_command_json(row),
            reason=reason or row.state,
            site_id=row.site_id,
        )

    def _bulk_info(self, session: Session, bulk: BulkOperation) -> BulkOperationInfo:
        commands = session.execute(
            select(RelayCommand.id, RelayCommand.refused_rule)
            .where(RelayCommand.bulk_id == bulk.id)
            .order_by(RelayCommand.id)
        ).all()
        return BulkOperationInfo(
            id=bulk.id,
            site_id=bulk.site_id,
            kind=CommandKind(bulk.kind),
            request_key=bulk.request_key,
            per_minute=bulk.per_minute,
            actor=bulk.actor,
            reason=bulk.reason,
            created_at=bulk.created_at,
            cancelled_at=bulk.cancelled_at,
            command_ids=tuple(c for c, _ in commands),
            refused=sum(1 for _, r in commands if r is not None),
        )


def _refuse(row: RelayCommand, refusal: Refusal, now: datetime) -> None:
    row.state = CommandState.FAILED.value
    row.refused_rule = refusal.rule.value
    row.refused_until = refusal.until
    row.finished_at = now
    row.next_attempt_at = None
    row.detail = f"refused by the safety policy: {refusal.message}"


def _wire_command(row: RelayCommand, now: datetime) -> Command:
    request_id = f"ctl-{row.id}-{row.attempts + 1}"
    kind = CommandKind(row.kind)
    if kind is CommandKind.READ_NOW:
        return reread_command(request_id, now - READ_NOW_WINDOW, now)
    if kind is CommandKind.SET_LOAD_LIMIT:
        if row.limit_w is None:  # the table's check constraint keeps this from happening
            raise ValidationError(f"relay command {row.id} sets a load limit but has none", "limit_w")
        return load_limit_command(request_id, row.limit_w)
    args = {"time": format_utc(now)} if kind is CommandKind.SET_CLOCK else {}
    return Command(_WIRE_NAME[kind], request_id, args)


def _unconfirmed_detail(row: RelayCommand) -> str:
    seen = (
        ""
        if row.reported_connected is None
        else f"; last report: relay {'closed' if row.reported_connected else 'open'}"
    )
    return f"no confirming report after {row.attempts} sends by the deadline{seen}"


def _kind(kind: CommandKind | str) -> CommandKind:
    try:
        return CommandKind(kind)
    except ValueError:
        raise ValidationError(
            f"unknown command {kind!r}; known: {[k.value for k in CommandKind]}", "kind"
        ) from None


def _check_limit(kind: CommandKind, limit_w: int | None) -> None:
    if kind is not CommandKind.SET_LOAD_LIMIT:
        if limit_w is not None:
            raise ValidationError(f"only set_load_limit takes a limit, not {kind}", "limit_w")
        return
    if limit_w is None:
        raise ValidationError("set_load_limit needs limit_w, the limit in W (0: no limit)", "limit_w")
    if not _whole(limit_w) or not 0 <= limit_w <= MAX_LOAD_LIMIT_W:
        raise ValidationError(
            f"a load limit is a whole number of W in 0..{MAX_LOAD_LIMIT_W} (0: no limit), got {limit_w!r}",
            "limit_w",
        )


def _describe(kind: str, limit_w: int | None) -> str:
    return str(kind) if limit_w is None else f"{kind} {limit_w} W"


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_CHARS or "\x00" in key:
        raise ValidationError(f"a request key is 1..{MAX_KEY_CHARS} characters, got {key!r}", "request_key")


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _command_info(row: RelayCommand) -> RelayCommandInfo:
    return RelayCommandInfo(
        id=row.id,
        site_id=row.site_id,
        meter_id=row.meter_id,
        kind=CommandKind(row.kind),
        state=CommandState(row.state),
        request_key=row.request_key,
        actor=row.actor,
        reason=row.reason,
        created_at=row.created_at,
        expires_at=row.expires_at,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        first_sent_at=row.first_sent_at,
        last_sent_at=row.last_sent_at,
        finished_at=row.finished_at,
        bulk_id=row.bulk_id,
        refused_rule=Rule(row.refused_rule) if row.refused_rule else None,
        refused_until=row.refused_until,
        reported_connected=row.reported_connected,
        detail=row.detail,
        limit_w=row.limit_w,
    )


def _command_json(row: RelayCommand) -> dict[str, Any]:
    def t(value: datetime | None) -> str | None:
        return format_utc(value) if value is not None else None

    return {
        "meter_id": row.meter_id,
        "kind": row.kind,
        "state": row.state,
        "attempts": row.attempts or 0,
        "next_attempt_at": t(row.next_attempt_at),
        "expires_at": t(row.expires_at),
        "refused_rule": row.refused_rule,
        "refused_until": t(row.refused_until),
        "reported_connected": row.reported_connected,
    } | ({} if row.limit_w is None else {"limit_w": row.limit_w})


def _policy_info(row: ControlPolicy) -> SitePolicyInfo:
    return SitePolicyInfo(
        site_id=row.site_id,
        stored=True,
        **{name: getattr(row, name) for name in DEFAULT_POLICY},
    )


def _policy_json(info: SitePolicyInfo) -> dict[str, Any]:
    return {name: getattr(info, name) for name in DEFAULT_POLICY} | {"stored": info.stored}


def _protection_info(row: SupplyProtection) -> ProtectionInfo:
    return ProtectionInfo(
        id=row.id,
        account_id=row.account_id,
        site_id=row.site_id,
        kind=row.kind,
        reason=row.reason,
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        created_by=row.created_by,
        created_at=row.created_at,
    )


def _protection_json(info: ProtectionInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "kind": info.kind,
        "valid_from": format_utc(info.valid_from),
        "valid_until": format_utc(info.valid_until) if info.valid_until else None,
    }


def _emergency_info(row: WeatherEmergency) -> EmergencyInfo:
    return EmergencyInfo(
        id=row.id,
        site_id=row.site_id,
        reason=row.reason,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        declared_by=row.declared_by,
        created_at=row.created_at,
    )
