"""Keeping the load profile complete: gaps found, re-read from the meter, estimated when no answer comes.

A gap is a run of missing intervals of one meter and OBIS code. `detect_gaps` records them (status open);
`due_rereads` lists those to ask the meter about and `mark_reread_requested` records that the head-end asked
(status reread_requested, with a back-off doubling per attempt); the answer arrives through
`ReadingsService.ingest` as source REREAD and settles the gap (filled, or closed when an operator's edit
completed it). `estimate_overdue` estimates the gaps whose re-read went unanswered (status estimated), and a
later actual value replaces those estimates.

Gaps are sought in the import load profile by default: export intervals come in the same frames and the same
re-read, so a gap in one is a gap in both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, false, insert, or_, select, update
from sqlalchemy.orm import Session

from openami.common.clock import ensure_aware
from openami.common.errors import ValidationError
from openami.common.obis import ACTIVE_IMPORT_INTERVAL
from openami.readings import estimation, flag_store, queries, rules, versions
from openami.readings.interfaces import Quality
from openami.readings.models import GapStatus, ReadingGap
from openami.registry.interfaces import MeterInfo
from openami.security.audit import AuditLog

log = structlog.get_logger(__name__)

REGISTER_OF_INTERVAL = {v: k for k, v in rules.INTERVAL_OBIS_OF_REGISTER.items()}


@dataclass(frozen=True, slots=True)
class RereadRequest:
    """Ask meter `meter_id` for its load profile `[start, end)` (UTC); the answer arrives through `ingest`."""

    gap_id: int
    meter_id: int
    obis: str
    start: datetime
    end: datetime
    request_id: str


class GapWorkflow:
    """Finds gaps, schedules their re-reads, estimates the overdue ones and settles those values complete.

    `meter_info(session, meter_id)` and `meter_infos(session)` tell it about meters (the readings service
    passes its cached lookup and the registry's listing).
    """

    def __init__(
        self,
        meter_info: Callable[[Session, int], MeterInfo],
        meter_infos: Callable[[Session], Sequence[MeterInfo]],
        *,
        gap_obis: Sequence[str] = (ACTIVE_IMPORT_INTERVAL,),
        reread_backoff: timedelta = timedelta(hours=1),
        max_reread_attempts: int = 3,
        history_days: int = 28,
        audit_log: AuditLog | None = None,
    ) -> None:
        self._audit_log = audit_log  # where estimates are recorded as the system's changes
        self._meter_info = meter_info
        self._meter_infos = meter_infos
        self.gap_obis = tuple(gap_obis)
        self.reread_backoff = reread_backoff
        self.max_reread_attempts = max_reread_attempts
        self.history_days = history_days

    def settle_touched(
        self, session: Session, touched: dict[tuple[int, str], tuple[datetime, datetime]], now: datetime
    ) -> None:
        """Fill the gaps and clear the GAP flags that the new actual values completed.

        `touched` is the span `[first start, last end)` of the values just ingested per (meter_id, obis).
        """
        meter_ids = sorted({m for m, _ in touched})
        for gap_id, meter_id, obis, start, end in queries.unsettled_gaps(session, meter_ids):
            span = touched.get((meter_id, obis))
            if span is not None and span[0] < end and start < span[1]:
                self.settle_gap(session, gap_id, meter_id, obis, start, end, now)
        for flag_id, meter_id, obis, start, end in queries.open_gap_flags(session, meter_ids):
            span = touched.get((meter_id, obis))
            if span is not None and span[0] < end and start < span[1]:
                counts = queries.quality_counts(session, meter_id, obis, start, end)
                expected = _slots(start, end, self._meter_info(session, meter_id).load_profile_interval_s)
                if counts[Quality.ACTUAL] + counts[Quality.EDITED] >= expected:
                    flag_store.clear_flags(session, [flag_id], now)

    def settle_gap(
        self,
        session: Session,
        gap_id: int,
        meter_id: int,
        obis: str,
        start: datetime,
        end: datetime,
        now: datetime,
    ) -> bool:
        """Mark the gap filled (all actual) or closed (some edited) once every interval has a real value."""
        counts = queries.quality_counts(session, meter_id, obis, start, end)
        expected = _slots(start, end, self._meter_info(session, meter_id).load_profile_interval_s)
        if counts[Quality.ACTUAL] + counts[Quality.EDITED] < expected:
            return False
        status = GapStatus.CLOSED if counts[Quality.EDITED] else GapStatus.FILLED
        session.execute(
            update(ReadingGap).where(ReadingGap.id == gap_id).values(status=status.value, settled_at=now)
        )
        flag_store.clear_gap_flags(session, meter_id, obis, start, end, now)
        return True

    def detect_gaps(
        self,
        session: Session,
        now: datetime,
        meter_ids: Sequence[int] | None = None,
        lookback: timedelta = timedelta(days=2),
        grace: timedelta = timedelta(hours=2),
    ) -> int:
        """Record runs of missing intervals from max(installed_at, now - lookback) to now - grace as gaps.

        Runs inside a gap already being handled are left to it; a run touching an open gap extends it.
        Complete meters cost one shared counting query; only incomplete ones are read interval by interval.
        Returns the number of gaps created or extended.
        """
        now = ensure_aware(now, "now")
        if meter_ids is None:
            infos = self._meter_infos(session)
        else:
            infos = [self._meter_info(session, m) for m in meter_ids]
        windows: dict[int, tuple[datetime, datetime, int]] = {}
        for info in infos:
            step = info.load_profile_interval_s
            start = now - lookback
            if info.installed_at is not None:
                start = max(start, info.installed_at)
            start = _ceil_to_grid(start, step)
            end = _floor_to_grid(now - grace, step)
            if end > start:
                windows[info.id] = (start, end, step)
        changed = 0
        for obis in self.gap_obis:
            counts = queries.interval_counts(session, obis, {m: (s, e) for m, (s, e, _) in windows.items()})
            known = queries.unsettled_gap_spans(session, obis, sorted(windows))
            for meter_id, (start, end, step) in windows.items():
                if counts.get(meter_id, 0) >= _slots(start, end, step):
                    continue
                present = queries.interval_starts(session, meter_id, obis, start, end)
                for run in rules.gap(present, start, end, step, obis):
                    changed += self._record_gap(
                        session, meter_id, obis, step, run, known.setdefault(meter_id, []), now
                    )
        return changed

    def _record_gap(
        self,
        session: Session,
        meter_id: int,
        obis: str,
        interval_s: int,
        run: rules.Flag,
        known: list[list[Any]],
        now: datetime,
    ) -> int:
        """Add the parts of `run` no unsettled gap covers: extend an adjacent open gap, or open a new one."""
        changed = 0
        for start, end in _subtract((run.start, run.end), [(g[1], g[2]) for g in known]):
            neighbour = next(
                (g for g in known if g[3] == GapStatus.OPEN.value and g[1] <= end and start <= g[2]), None
            )
            if neighbour is not None:
                neighbour[1], neighbour[2] = min(neighbour[1], start), max(neighbour[2], end)
                session.execute(
                    update(ReadingGap)
                    .where(ReadingGap.id == neighbour[0])
                    .values(start_at=neighbour[1], end_at=neighbour[2])
                )
            else:
                gap_id = session.execute(
                    insert(ReadingGap)
                    .values(meter_id=meter_id, obis=obis, start_at=start, end_at=end, detected_at=now)
                    .returning(ReadingGap.id)
                ).scalar_one()
                known.append([gap_id, start, end, GapStatus.OPEN.value])
            flag_store.store_flags(
                session, [(meter_id, f) for f in rules.gap([], start, end, interval_s, obis)], now
            )
            changed += 1
        return changed

    def due_rereads(self, session: Session, now: datetime, limit: int = 100) -> list[RereadRequest]:
        """Gaps to ask the meters about: open ones, and unanswered requests whose back-off has passed.

        The back-off doubles with each attempt (reread_backoff, 2×, 4× ...) up to `max_reread_attempts`.
        On PostgreSQL the rows are locked (SKIP LOCKED) so that two workers never ask twice for one gap.
        """
        now = ensure_aware(now, "now")
        # One condition per attempt count: the database filters the back-off; LIMIT locks only what is due.
        retry_due = [
            and_(ReadingGap.attempts == n, ReadingGap.requested_at <= now - self._backoff(n))
            for n in range(1, self.max_reread_attempts)
        ]
        stmt = (
            select(
                ReadingGap.id, ReadingGap.meter_id, ReadingGap.obis, ReadingGap.start_at, ReadingGap.end_at
            )
            .add_columns(ReadingGap.attempts)
            .where(
                or_(
                    ReadingGap.status == GapStatus.OPEN.value,
                    and_(ReadingGap.status == GapStatus.REREAD_REQUESTED.value, or_(false(), *retry_due)),
                )
            )
            .order_by(ReadingGap.attempts, ReadingGap.start_at, ReadingGap.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [
            RereadRequest(gap_id, meter_id, obis, start, end, _request_id(gap_id, attempts + 1))
            for gap_id, meter_id, obis, start, end, attempts in session.execute(stmt)
        ]

    def _backoff(self, attempts: int) -> timedelta:
        return self.reread_backoff * (1 << max(attempts - 1, 0))

    def mark_reread_requested(self, session: Session, gap_ids: Sequence[int], now: datetime) -> int:
        """Record that the head-end sent a re-read for each gap; returns how many still waited for one."""
        now = ensure_aware(now, "now")
        marked = 0
        rows = session.execute(
            select(ReadingGap.id, ReadingGap.attempts, ReadingGap.first_requested_at).where(
                ReadingGap.id.in_(list(gap_ids)),
                ReadingGap.status.in_([GapStatus.OPEN.value, GapStatus.REREAD_REQUESTED.value]),
            )
        ).all()
        for gap_id, attempts, first in rows:
            session.execute(
                update(ReadingGap)
                .where(ReadingGap.id == gap_id)
                .values(
                    status=GapStatus.REREAD_REQUESTED.value,
                    attempts=attempts + 1,
                    requested_at=now,
                    first_requested_at=first or now,
                    request_id=_request_id(gap_id, attempts + 1),
                )
            )
            marked += 1
        return marked

    def estimate_overdue(
        self, session: Session, now: datetime, reread_timeout: timedelta = timedelta(hours=4)
    ) -> int:
        """Estimate the missing intervals of gaps whose re-read went unanswered; returns intervals estimated.

        Overdue: the first request is older than `reread_timeout`, or every attempt was made and the last
        one's back-off has passed. Each run of missing intervals is estimated with `estimation.estimate_gap`
        from the meter's recent actual values, scaled to the register delta across it when registers bracket
        it.
        """
        now = ensure_aware(now, "now")
        overdue = session.execute(
            select(
                ReadingGap.id, ReadingGap.meter_id, ReadingGap.obis, ReadingGap.start_at, ReadingGap.end_at
            )
            .where(
                ReadingGap.status == GapStatus.REREAD_REQUESTED.value,
                or_(
                    ReadingGap.first_requested_at <= now - reread_timeout,
                    and_(
                        ReadingGap.attempts >= self.max_reread_attempts,
                        ReadingGap.requested_at <= now - self._backoff(self.max_reread_attempts),
                    ),
                ),
            )
            .order_by(ReadingGap.meter_id, ReadingGap.start_at)
            .with_for_update(skip_locked=True)
        ).all()
        estimated = 0
        for gap_id, meter_id, obis, start, end in overdue:
            if self.settle_gap(session, gap_id, meter_id, obis, start, end, now):
                continue
            info = self._meter_info(session, meter_id)
            step = timedelta(seconds=info.load_profile_interval_s)
            present = set(queries.interval_starts(session, meter_id, obis, start, end))
            missing = [t for t in _grid(start, end, info.load_profile_interval_s) if t not in present]
            history = queries.actual_history(
                session, meter_id, obis, start - timedelta(days=self.history_days + 1), end + step
            )
            rows, reasons = [], []
            for run in _contiguous(missing, step):
                try:
                    estimate = estimation.estimate_gap(
                        run,
                        history,
                        info.load_profile_interval_s,
                        info.timezone,
                        total_wh=self._register_total(session, meter_id, obis, run, step),
                        max_days_back=self.history_days,
                    )
                except ValidationError as exc:
                    log.warning("gap_not_estimated", gap_id=gap_id, meter_id=meter_id, reason=str(exc))
                    continue
                reasons.append(estimate.reason)
                rows += [
                    (meter_id, obis, t, info.load_profile_interval_s, wh, estimate.reason)
                    for t, wh in zip(run, estimate.values_wh, strict=True)
                ]
            if not rows:
                continue
            count = versions.insert_estimates(session, rows, now)
            estimated += count
            if self._audit_log is not None:
                self._audit_log.append(
                    session,
                    actor="system:collection",
                    role="system",
                    action="readings.gap_estimated",
                    object_type="gap",
                    object_id=str(gap_id),
                    after={
                        "meter": info.serial,
                        "obis": obis,
                        "start": start.isoformat(),
                        "end": end.isoformat(),
                        "intervals_estimated": count,
                        "how": "; ".join(reasons)[:500],
                    },
                    reason="the re-read went unanswered",
                    site_id=info.site_id,
                )
            session.execute(
                update(ReadingGap)
                .where(ReadingGap.id == gap_id)
                .values(
                    status=GapStatus.ESTIMATED.value,
                    estimated_at=now,
                    estimate_reason="; ".join(reasons)[:500],
                )
            )
        return estimated

    def _register_total(
        self, session: Session, meter_id: int, obis: str, run: list[datetime], step: timedelta
    ) -> int | None:
        """The energy (Wh) of `run` told by the registers around it, when nothing else between is missing."""
        register = REGISTER_OF_INTERVAL.get(obis)
        if register is None:
            return None
        before, after = queries.bracketing_registers(session, meter_id, register, run[0], run[-1] + step)
        if before is None or after is None:
            return None
        counted = queries.quality_counts(session, meter_id, obis, before.read_at, after.read_at)
        slots = (after.read_at - before.read_at) / step
        if slots != int(slots) or sum(counted.values()) + len(run) != slots:
            return None  # the registers are off the grid, or another interval between them is missing too
        total = (
            after.energy_wh
            - before.energy_wh
            - queries.energy_sum(session, meter_id, obis, before.read_at, after.read_at)
        )
        return total if total >= 0 else None


# --- helpers -----------------------------------------------------------------------------------------------


def _slots(start: datetime, end: datetime, interval_s: int) -> int:
    return len(_grid(start, end, interval_s))


def _grid(start: datetime, end: datetime, interval_s: int) -> list[datetime]:
    first = _ceil_to_grid(start, interval_s)
    step = timedelta(seconds=interval_s)
    out = []
    t = first
    while t < end:
        out.append(t)
        t += step
    return out


def _floor_to_grid(instant: datetime, interval_s: int) -> datetime:
    epoch_s = math.floor(instant.timestamp())
    return datetime.fromtimestamp(epoch_s - epoch_s % interval_s, tz=instant.tzinfo)


def _ceil_to_grid(instant: datetime, interval_s: int) -> datetime:
    floor = _floor_to_grid(instant, interval_s)
    return floor if floor == instant else floor + timedelta(seconds=interval_s)


def _contiguous(starts: list[datetime], step: timedelta) -> list[list[datetime]]:
    runs: list[list[datetime]] = []
    for t in sorted(starts):
        if runs and t - runs[-1][-1] == step:
            runs[-1].append(t)
        else:
            runs.append([t])
    return runs


def _subtract(
    span: tuple[datetime, datetime], others: list[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    pieces = [span]
    for o_start, o_end in others:
        nxt = []
        for start, end in pieces:
            if o_end <= start or end <= o_start:
                nxt.append((start, end))
                continue
            if start < o_start:
                nxt.append((start, o_start))
            if o_end < end:
                nxt.append((o_end, end))
        pieces = nxt
    return pieces


def _request_id(gap_id: int, attempt: int) -> str:
    return f"reread-{gap_id}-{attempt}"
