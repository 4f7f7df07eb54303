"""The readings service: idempotent bulk ingest with VEE, gaps, re-reads, estimation, edits and completeness.

`ingest` runs inside the caller's transaction (the head-end commits, then acknowledges the frames) and never
commits. Per record, impossible values are rejected with a stable reason code and never stored; the rest go
through the VEE rules (`rules.validate`) and the bulk writer (`bulk.write_new_rows`):
- an identical duplicate changes nothing and is counted as a duplicate;
- a different value for a stored actual interval becomes a new version (the old one goes to history, why
  `conflict`) and raises a CONFLICT flag;
- an actual value for an estimated interval replaces it (history why `replaced_by_actual`), and a gap whose
  intervals are all actual again is filled;
- an operator's edit stands: a different meter value for an edited interval only raises a CONFLICT flag, and a
  meter value equal to one the operator already replaced is a duplicate.
`IngestResult.intervals_stored` counts every value that became current: new keys, conflict versions and
replaced estimates (likewise `registers_stored`).

Gap handling (`detect_gaps`, `due_rereads`, `mark_reread_requested`, `estimate_overdue`) covers the import
load profile by default: export intervals come in the same frames and the same re-read, so a gap in one is a
gap in both.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from operator import itemgetter
from typing import Any

import structlog
from sqlalchemy import and_, delete, false, insert, or_, select, update
from sqlalchemy.orm import Session

from openami.common.clock import Clock, ensure_aware
from openami.common.errors import NotFoundError, ValidationError
from openami.common.obis import ACTIVE_IMPORT_INTERVAL, QUANTITIES, Kind
from openami.readings import bulk, completeness, estimation, queries, rules
from openami.readings.interfaces import (
    IngestResult,
    InstantValue,
    IntervalValue,
    MeterBatch,
    MeterEvent,
    Quality,
    RegisterValue,
    Source,
)
from openami.readings.models import (
    DailyCompleteness,
    GapStatus,
    ReadingGap,
    SupersededWhy,
)
from openami.registry.interfaces import MeterInfo
from openami.registry.service import RegistryService

log = structlog.get_logger(__name__)

METER_SOURCES = frozenset({Source.PUSH, Source.REREAD, Source.POLL, Source.IMPORT})
# How far beyond the service rating a value stops being a spike to flag and becomes physically impossible.
IMPOSSIBLE_RATING_FACTOR = 10
REGISTER_OF_INTERVAL = {v: k for k, v in rules.INTERVAL_OBIS_OF_REGISTER.items()}
_UNKNOWN_METER = "unknown_meter"
ACTUAL = Quality.ACTUAL.value
INTERVAL_OBIS = frozenset(q.obis for q in QUANTITIES.values() if q.kind is Kind.INTERVAL)
# After a direct COPY met stored keys, this many interval writes go straight to the staging path.
DIRECT_COPY_PAUSE = 20


@dataclass(frozen=True, slots=True)
class RereadRequest:
    """Ask meter `meter_id` for its load profile `[start, end)` (UTC); the answer arrives through `ingest`."""

    gap_id: int
    meter_id: int
    obis: str
    start: datetime
    end: datetime
    request_id: str


@dataclass(slots=True)
class _Accepted:
    """One batch's values that passed the screening, with its meter."""

    batch: MeterBatch
    info: MeterInfo
    intervals: list[IntervalValue] = field(default_factory=list)
    registers: list[RegisterValue] = field(default_factory=list)
    instants: list[InstantValue] = field(default_factory=list)
    events: list[MeterEvent] = field(default_factory=list)


class ReadingsService:
    """Stores what meters report and keeps the load profile complete. Implements `ReadingsSink`."""

    def __init__(
        self,
        clock: Clock,
        registry: RegistryService | None = None,
        *,
        max_clock_skew: timedelta = timedelta(seconds=300),
        max_reading_age: timedelta = timedelta(days=400),
        gap_obis: Sequence[str] = (ACTIVE_IMPORT_INTERVAL,),
        reread_backoff: timedelta = timedelta(hours=1),
        max_reread_attempts: int = 3,
        history_days: int = 28,
    ) -> None:
        self.clock = clock
        self.registry = registry or RegistryService(clock)
        self.max_clock_skew = max_clock_skew
        self.max_reading_age = max_reading_age
        self.gap_obis = tuple(gap_obis)
        self.reread_backoff = reread_backoff
        self.max_reread_attempts = max_reread_attempts
        self.history_days = history_days
        self._meters: dict[int, MeterInfo] = {}
        self._skip_direct_copy = 0

    # -- meters ----------------------------------------------------------------------------------------------

    def meter_info(self, session: Session, meter_id: int) -> MeterInfo:
        """The registry's `MeterInfo`, cached per meter for the service's life (`forget_meters` drops it)."""
        info = self._meters.get(meter_id)
        if info is None:
            info = self.registry.meter_info(session, meter_id)
            self._meters[meter_id] = info
        return info

    def forget_meters(self) -> None:
        """Drop the cached `MeterInfo`s, e.g. after the registry changed a meter's rating or interval."""
        self._meters.clear()

    # -- ingest ----------------------------------------------------------------------------------------------

    def ingest(self, session: Session, batches: list[MeterBatch]) -> IngestResult:
        """Store the batches idempotently, in bulk, in the caller's transaction (see the module docstring)."""
        result = IngestResult()
        accepted = [a for a in (self._screen(session, b, result) for b in batches) if a is not None]
        if not accepted:
            return result
        previous = queries.previous_registers(
            session,
            {
                (a.info.id, r.obis): min(x.read_at for x in a.registers if x.obis == r.obis)
                for a in accepted
                for r in a.registers
            },
        )
        flags: list[tuple[int, rules.Flag]] = []
        interval_rows: list[tuple[Any, ...]] = []
        register_rows: list[tuple[Any, ...]] = []
        for a in accepted:
            context = rules.ValidationContext(
                interval_s=a.info.load_profile_interval_s, max_power_w=a.info.max_power_w
            )
            earlier = [previous[k] for k in {(a.info.id, r.obis) for r in a.registers} if k in previous]
            found = rules.validate(
                a.intervals,
                [*earlier, *a.registers],
                context,
                meter_time=a.batch.meter_time,
                received_at=a.batch.received_at,
            )
            flags += [(a.info.id, f) for f in found]
            meter_id, source, received_at = a.info.id, a.batch.source.value, a.batch.received_at
            interval_rows += [
                # The bulk.INTERVALS row, built inline: this loop runs once per stored interval.
                (
                    meter_id,
                    v.obis,
                    v.interval_start,
                    v.interval_s,
                    v.energy_wh,
                    ACTUAL,
                    source,
                    v.status,
                    1,
                    received_at,
                    _flag_bits(found, v) if found else 0,
                )
                for v in a.intervals
            ]
            register_rows += [
                (a.info.id, r.obis, r.read_at, r.energy_wh, source, 1, received_at) for r in a.registers
            ]
        now = self.clock.now()
        touched = self._store_intervals(session, interval_rows, now, result, flags)
        self._store_registers(session, register_rows, now, result, flags)
        bulk.upsert_instants(
            session,
            [
                (a.info.id, i.obis, i.value, i.read_at, a.batch.received_at)
                for a in accepted
                for i in a.instants
            ],
        )
        bulk.insert_events(
            session,
            [
                (a.info.id, e.sequence, e.code, e.occurred_at, e.detail, a.batch.received_at)
                for a in accepted
                for e in a.events
            ],
        )
        for rule in bulk.store_flags(session, flags, now):
            result.flags_raised[rule] = result.flags_raised.get(rule, 0) + 1
        if touched:
            self._settle_gaps(session, touched, now)
        return result

    def _screen(self, session: Session, batch: MeterBatch, result: IngestResult) -> _Accepted | None:
        """Keep the values that can be true; count the others in `result.rejected` by reason."""
        if batch.source not in METER_SOURCES:
            raise ValidationError(
                f"ingest stores what meters report; source {batch.source.value!r} is not a meter's",
                f"batch of meter {batch.meter_id}",
            )
        received_at = ensure_aware(batch.received_at, f"received_at of the batch of meter {batch.meter_id}")
        rejected: Counter[str] = Counter()
        try:
            info = self.meter_info(session, batch.meter_id)
        except NotFoundError:
            total = len(batch.intervals) + len(batch.registers) + len(batch.instants) + len(batch.events)
            rejected[_UNKNOWN_METER] += total
            _count_rejections(result, rejected, batch, f"no meter with id {batch.meter_id}")
            return None
        earliest, latest = received_at - self.max_reading_age, received_at + self.max_clock_skew
        out = _Accepted(batch, info)
        first_detail = ""
        step = info.load_profile_interval_s
        limit_wh = IMPOSSIBLE_RATING_FACTOR * info.max_power_w * step / 3600
        bounds_s = (earliest.timestamp(), latest.timestamp() - step)
        for v in batch.intervals:
            reason = _interval_problem(v, step, limit_wh, bounds_s)
            if reason:
                rejected[reason[0]] += 1
                first_detail = first_detail or reason[1]
            else:
                out.intervals.append(v)
        for r in batch.registers:
            reason = _register_problem(r, earliest, latest)
            if reason:
                rejected[reason[0]] += 1
                first_detail = first_detail or reason[1]
            else:
                out.registers.append(r)
        for i in batch.instants:
            reason = _instant_problem(i, info, earliest, latest)
            if reason:
                rejected[reason[0]] += 1
                first_detail = first_detail or reason[1]
            else:
                out.instants.append(i)
        for e in batch.events:
            if not _aware(e.occurred_at) or not earliest <= e.occurred_at <= latest:
                rejected["time_out_of_range"] += 1
                first_detail = first_detail or f"event {e.code} #{e.sequence} at {e.occurred_at.isoformat()}"
            else:
                out.events.append(e)
        _count_rejections(result, rejected, batch, first_detail)
        return out

    def _store_intervals(
        self,
        session: Session,
        rows: list[tuple[Any, ...]],
        now: datetime,
        result: IngestResult,
        flags: list[tuple[int, rules.Flag]],
    ) -> dict[tuple[int, str], tuple[datetime, datetime]]:
        """Write interval rows; returns the span of new actual values per (meter, OBIS) for gap settling."""
        touched: dict[tuple[int, str], tuple[datetime, datetime]] = {}
        for row in rows:
            # Every ingested interval counts as touched: settling then looks only at gaps and GAP flags that
            # overlap, and finds them complete or not by counting what is stored.
            key, end = (row[0], row[1]), row[2] + timedelta(seconds=row[3])
            low, high = touched.get(key, (row[2], end))
            touched[key] = (min(low, row[2]), max(high, end))
        for batch_rows in _rounds(rows, 3):
            outcome = bulk.write_new_rows(session, bulk.INTERVALS, batch_rows, direct=self._direct_copy_due())
            if outcome.fell_back:
                self._skip_direct_copy = DIRECT_COPY_PAUSE
            edited = [c for c in outcome.clashes if c.stored["quality"] == Quality.EDITED.value]
            already_seen = bulk.history_energies(session, [batch_rows[c.index] for c in edited])
            replaced, conflicts, same_as_edit, against_edit = [], [], 0, 0
            for c in outcome.clashes:
                row, stored = batch_rows[c.index], c.stored
                if stored["quality"] == Quality.ESTIMATED.value:
                    replaced.append((row, stored, row[10]))
                elif stored["quality"] == Quality.EDITED.value:
                    if row[4] == stored["energy_wh"] or row[4] in already_seen.get(row[:3], set()):
                        same_as_edit += 1
                    else:
                        against_edit += 1
                        flags.append((row[0], _conflict_flag(row, stored, "the operator's edit stands")))
                else:
                    conflict_bits = row[10] | stored["flags"] | bulk.RULE_BITS[rules.Rule.CONFLICT]
                    conflicts.append((row, stored, conflict_bits))
                    flags.append((row[0], _conflict_flag(row, stored, "kept as a new version")))
            bulk.supersede_intervals(session, replaced, SupersededWhy.REPLACED_BY_ACTUAL, now)
            bulk.supersede_intervals(session, conflicts, SupersededWhy.CONFLICT, now)
            result.intervals_stored += outcome.inserted + len(replaced) + len(conflicts)
            result.estimates_replaced += len(replaced)
            result.conflicts += len(conflicts) + against_edit
            result.duplicates += len(batch_rows) - outcome.inserted - len(outcome.clashes) + same_as_edit
        return touched

    def _store_registers(
        self,
        session: Session,
        rows: list[tuple[Any, ...]],
        now: datetime,
        result: IngestResult,
        flags: list[tuple[int, rules.Flag]],
    ) -> None:
        for batch_rows in _rounds(rows, 3):
            outcome = bulk.write_new_rows(session, bulk.REGISTERS, batch_rows)
            conflicts = [(batch_rows[c.index], c.stored) for c in outcome.clashes]
            bulk.supersede_registers(session, conflicts, now)
            for row, stored in conflicts:
                reason = (
                    f"register {row[1]} read at {row[2].isoformat()} was stored as {stored['energy_wh']} Wh "
                    f"(version {stored['version']}), the meter now sent {row[3]} Wh: kept as a new version"
                )
                flags.append((row[0], rules.Flag(rules.Rule.CONFLICT, row[1], row[2], row[2], reason)))
            result.registers_stored += outcome.inserted + len(conflicts)
            result.conflicts += len(conflicts)
            result.duplicates += len(batch_rows) - outcome.inserted - len(conflicts)

    def _direct_copy_due(self) -> bool:
        """Try the direct COPY unless one found stored keys recently (replays come in runs)."""
        if self._skip_direct_copy:
            self._skip_direct_copy -= 1
            return False
        return True

    # -- gaps ------------------------------------------------------------------------------------------------

    def _settle_gaps(
        self, session: Session, touched: dict[tuple[int, str], tuple[datetime, datetime]], now: datetime
    ) -> None:
        """Fill the gaps and clear the GAP flags that the new actual values completed."""
        meter_ids = sorted({m for m, _ in touched})
        for gap_id, meter_id, obis, start, end in queries.unsettled_gaps(session, meter_ids):
            span = touched.get((meter_id, obis))
            if span is not None and span[0] < end and start < span[1]:
                self._settle_gap(session, gap_id, meter_id, obis, start, end, now)
        for flag_id, meter_id, obis, start, end in queries.open_gap_flags(session, meter_ids):
            span = touched.get((meter_id, obis))
            if span is not None and span[0] < end and start < span[1]:
                counts = queries.quality_counts(session, meter_id, obis, start, end)
                expected = _slots(start, end, self.meter_info(session, meter_id).load_profile_interval_s)
                if counts[Quality.ACTUAL] + counts[Quality.EDITED] >= expected:
                    bulk.clear_flags(session, [flag_id], now)

    def _settle_gap(
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
        expected = _slots(start, end, self.meter_info(session, meter_id).load_profile_interval_s)
        if counts[Quality.ACTUAL] + counts[Quality.EDITED] < expected:
            return False
        status = GapStatus.CLOSED if counts[Quality.EDITED] else GapStatus.FILLED
        session.execute(
            update(ReadingGap).where(ReadingGap.id == gap_id).values(status=status.value, settled_at=now)
        )
        bulk.clear_gap_flags(session, meter_id, obis, start, end, now)
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
            infos = self.registry.meter_infos(session)
        else:
            infos = [self.meter_info(session, m) for m in meter_ids]
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
            bulk.store_flags(
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
            if self._settle_gap(session, gap_id, meter_id, obis, start, end, now):
                continue
            info = self.meter_info(session, meter_id)
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
            estimated += bulk.insert_estimates(session, rows, now)
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

    # -- editing ---------------------------------------------------------------------------------------------

    def edit_interval(
        self,
        session: Session,
        meter_id: int,
        obis: str,
        interval_start: datetime,
        energy_wh: int,
        reason: str,
        editor: str,
    ) -> int:
        """Set an interval's energy by hand (quality edited, source operator); returns the new version.

        The reason is mandatory; the superseded version goes to history (why `edited`).
        """
        reason, editor = (reason or "").strip(), (editor or "").strip()
        if not reason:
            raise ValidationError("an edit needs a reason saying why the value is changed", "reason")
        if not editor:
            raise ValidationError("an edit needs the name of the person making it", "editor")
        if isinstance(energy_wh, bool) or not isinstance(energy_wh, int) or energy_wh < 0:
            raise ValidationError(f"energy must be a whole number of Wh >= 0, got {energy_wh!r}", "energy_wh")
        info = self.meter_info(session, meter_id)
        quantity = QUANTITIES.get(obis)
        if quantity is None or quantity.kind is not Kind.INTERVAL:
            raise ValidationError(f"{obis!r} is not a load-profile quantity", "obis")
        start = ensure_aware(interval_start, "interval_start")
        step = info.load_profile_interval_s
        if int(start.timestamp()) % step or start.microsecond:
            raise ValidationError(
                f"{start.isoformat()} is not the start of a {step} s interval of meter {info.serial}",
                "interval_start",
            )
        now = self.clock.now()
        if start >= now:
            raise ValidationError(f"{start.isoformat()} has not happened yet", "interval_start")
        version = bulk.edit_interval_row(session, meter_id, obis, start, step, energy_wh, reason, editor, now)
        for gap_id, g_meter, g_obis, g_start, g_end in queries.unsettled_gaps(session, [meter_id]):
            if g_obis == obis and g_start <= start < g_end:
                self._settle_gap(session, gap_id, g_meter, g_obis, g_start, g_end, now)
        return version

    # -- completeness ----------------------------------------------------------------------------------------

    def refresh_completeness(
        self, session: Session, meter_ids: Sequence[int], days: Sequence[date]
    ) -> list[tuple[int, completeness.DayCompleteness]]:
        """Recount each meter's import intervals for each site-local day and store the counts."""
        now = self.clock.now()
        obis = self.gap_obis[0] if self.gap_obis else ACTIVE_IMPORT_INTERVAL
        out = []
        ordered_days = sorted(set(days))
        for meter_id in meter_ids:
            info = self.meter_info(session, meter_id)
            if not ordered_days:
                break
            start, _ = completeness.local_day_bounds(ordered_days[0], info.timezone)
            _, end = completeness.local_day_bounds(ordered_days[-1], info.timezone)
            qualities = queries.interval_qualities(session, meter_id, obis, start, end)
            grid = completeness.completeness_grid(
                qualities, ordered_days, info.timezone, info.load_profile_interval_s, info.installed_at, now
            )
            session.execute(
                delete(DailyCompleteness).where(
                    DailyCompleteness.meter_id == meter_id, DailyCompleteness.day.in_(ordered_days)
                )
            )
            session.execute(
                insert(DailyCompleteness),
                [
                    {
                        "meter_id": meter_id,
                        "day": d.day,
                        "expected": d.expected,
                        "actual": d.actual,
                        "estimated": d.estimated,
                        "edited": d.edited,
                        "missing": d.missing,
                        "refreshed_at": now,
                    }
                    for d in grid
                ],
            )
            out += [(meter_id, d) for d in grid]
        return out


# --- helpers ------------------------------------------------------------------------------------------------


def _count_rejections(result: IngestResult, rejected: Counter[str], batch: MeterBatch, detail: str) -> None:
    if not rejected:
        return
    for reason, count in rejected.items():
        result.rejected[reason] = result.rejected.get(reason, 0) + count
    log.warning("readings_rejected", meter_id=batch.meter_id, reasons=dict(rejected), example=detail)


def _interval_problem(
    v: IntervalValue, step: int, limit_wh: float, bounds_s: tuple[float, float]
) -> tuple[str, str] | None:
    """Why an interval value cannot be true, or None. The common, valid case builds no message."""
    start = v.interval_start
    if v.obis not in INTERVAL_OBIS:
        return "unknown_obis", f"interval {v.obis}: not a load-profile quantity"
    if not _aware(start):
        return "time_out_of_range", f"interval {v.obis} at {start.isoformat()}: naive timestamp"
    start_s = start.timestamp()
    if v.interval_s != step:
        code, why = "interval_length", f"{v.interval_s} s long, the meter's profile is {step} s"
    elif start_s % step:
        code, why = "misaligned_interval", f"not on the {step} s grid"
    elif not bounds_s[0] <= start_s <= bounds_s[1]:
        code, why = "time_out_of_range", "too old, or ends after the head-end's clock plus the allowed skew"
    elif v.energy_wh < 0:
        code, why = "negative_energy", f"{v.energy_wh} Wh"
    elif v.energy_wh > limit_wh:
        code, why = (
            "beyond_rating",
            f"{v.energy_wh} Wh > {limit_wh:.0f} Wh ({IMPOSSIBLE_RATING_FACTOR}× the rating)",
        )
    else:
        return None
    return code, f"interval {v.obis} at {start.isoformat()}: {why}"


def _register_problem(r: RegisterValue, earliest: datetime, latest: datetime) -> tuple[str, str] | None:
    where = f"register {r.obis} at {r.read_at.isoformat()}"
    quantity = QUANTITIES.get(r.obis)
    if quantity is None or quantity.kind is not Kind.REGISTER:
        return "unknown_obis", f"{where}: {r.obis} is not a cumulative register"
    if not _aware(r.read_at) or not earliest <= r.read_at <= latest:
        return "time_out_of_range", f"{where}: outside [{earliest.isoformat()}, {latest.isoformat()}]"
    if r.energy_wh < 0:
        return "negative_energy", f"{where}: {r.energy_wh} Wh"
    return None


def _instant_problem(
    i: InstantValue, info: MeterInfo, earliest: datetime, latest: datetime
) -> tuple[str, str] | None:
    where = f"instant {i.obis} at {i.read_at.isoformat()}"
    quantity = QUANTITIES.get(i.obis)
    if quantity is None or quantity.kind not in (Kind.INSTANT, Kind.STATE):
        return "unknown_obis", f"{where}: {i.obis} is not an instantaneous value"
    if not _aware(i.read_at) or not earliest <= i.read_at <= latest:
        return "time_out_of_range", f"{where}: outside [{earliest.isoformat()}, {latest.isoformat()}]"
    if not math.isfinite(i.value) or i.value < 0:
        return "impossible_value", f"{where}: {i.value}"
    if quantity.kind is Kind.STATE and i.value not in (0, 1):
        return "impossible_value", f"{where}: state {i.value} is neither 0 nor 1"
    if quantity.unit == "W" and i.value > IMPOSSIBLE_RATING_FACTOR * info.max_power_w:
        return "beyond_rating", f"{where}: {i.value} W > {IMPOSSIBLE_RATING_FACTOR}× the service rating"
    return None


def _aware(instant: datetime) -> bool:
    return instant.tzinfo is not None and instant.utcoffset() is not None


def _flag_bits(found: list[rules.Flag], v: IntervalValue) -> int:
    bits = 0
    for f in found:
        if f.obis == v.obis and f.start <= v.interval_start < f.end:
            bits |= bulk.RULE_BITS[f.rule]
    return bits


def _conflict_flag(row: tuple[Any, ...], stored: dict[str, Any], outcome: str) -> rules.Flag:
    end = row[2] + timedelta(seconds=row[3])
    reason = (
        f"interval {row[1]} at {row[2].isoformat()} was stored as {stored['energy_wh']} Wh "
        f"({stored['quality']}, version {stored['version']}), the meter now sent {row[4]} Wh: {outcome}"
    )
    return rules.Flag(rules.Rule.CONFLICT, row[1], row[2], end, reason)


def _rounds(rows: list[tuple[Any, ...]], key_length: int) -> list[list[tuple[Any, ...]]]:
    """Split rows so that no list repeats a key: the first of each key first, repeats in later rounds."""
    if len(set(map(itemgetter(*range(key_length)), rows))) == len(rows):
        return [rows] if rows else []
    rounds: list[list[tuple[Any, ...]]] = []
    seen_in: dict[tuple[Any, ...], int] = defaultdict(int)
    for row in rows:
        n = seen_in[row[:key_length]]
        seen_in[row[:key_length]] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(row)
    return rounds


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
