"""The readings service: idempotent bulk ingest with VEE, gaps, re-reads, estimation, edits and completeness.

`ingest` runs inside the caller's transaction (the head-end commits, then acknowledges the frames) and never
commits. Per record, impossible values are rejected with a stable reason code and never stored (`screening`);
the rest go through the VEE rules (`rules.validate`) and the bulk writer (`bulk.write_new_rows`):
- an identical duplicate changes nothing and is counted as a duplicate;
- a different value for a stored actual interval becomes a new version (the old one goes to history, why
  `conflict`) and raises a CONFLICT flag;
- an actual value for an estimated interval replaces it (history why `replaced_by_actual`), and a gap whose
  intervals are all actual again is filled;
- an operator's edit stands: a different meter value for an edited interval only raises a CONFLICT flag, and a
  meter value equal to one the operator already replaced is a duplicate.
`IngestResult.intervals_stored` counts every value that became current: new keys, conflict versions and
replaced estimates (likewise `registers_stored`).

Gap handling (`detect_gaps`, `due_rereads`, `mark_reread_requested`, `estimate_overdue`) is the `gaps`
module's `GapWorkflow`, which the service runs with its cached meter lookup.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert
from sqlalchemy.orm import Session

from openami.common.clock import Clock, ensure_aware
from openami.common.errors import ValidationError
from openami.common.obis import ACTIVE_IMPORT_INTERVAL, QUANTITIES, Kind
from openami.readings import bulk, completeness, flag_store, queries, rules, versions
from openami.readings.gaps import GapWorkflow, RereadRequest
from openami.readings.interfaces import IngestResult, IntervalValue, MeterBatch, Quality
from openami.readings.models import DailyCompleteness, SupersededWhy
from openami.readings.screening import INTERVAL_OBIS, Accepted, screen_batch
from openami.registry.interfaces import MeterInfo
from openami.registry.service import RegistryService
from openami.security.audit import AuditLog

__all__ = ["ReadingsService", "RereadRequest"]

ACTUAL = Quality.ACTUAL.value
# After a direct COPY met stored keys, this many ingest calls write through the staging table instead.
DIRECT_COPY_PAUSE = 20


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
        self.registry = registry or RegistryService.from_settings(clock)
        self.max_clock_skew = max_clock_skew
        self.max_reading_age = max_reading_age
        self.gaps = GapWorkflow(
            self.meter_info,
            self.registry.meter_infos,
            gap_obis=gap_obis,
            reread_backoff=reread_backoff,
            max_reread_attempts=max_reread_attempts,
            history_days=history_days,
            audit_log=AuditLog(clock),
        )
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
        uncached = {b.meter_id for b in batches} - self._meters.keys()
        if uncached:  # looked up together, not one query per meter (unknown ones: `screen_batch` says so)
            self._meters.update(self.registry.meters_by_id(session, uncached))
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
        # The span of ingested intervals per (meter, OBIS): settling then looks only at gaps and GAP flags
        # that overlap, and finds them complete or not by counting what is stored.
        touched: dict[tuple[int, str], tuple[datetime, datetime]] = {}
        contexts: dict[tuple[int, float], rules.ValidationContext] = {}
        for a in accepted:
            meter_id, source, received_at = a.info.id, a.batch.source.value, a.batch.received_at
            step, rating_w = a.info.load_profile_interval_s, a.info.max_power_w
            context = contexts.get((step, rating_w))
            if context is None:
                context = contexts[step, rating_w] = rules.ValidationContext(
                    interval_s=step, max_power_w=rating_w
                )
            earlier = [previous[k] for k in {(meter_id, r.obis) for r in a.registers} if k in previous]
            found = rules.validate(
                a.intervals,
                [*earlier, *a.registers],
                context,
                meter_time=a.batch.meter_time,
                received_at=received_at,
            )
            flags += [(meter_id, f) for f in found]
            first_row = len(interval_rows)
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
                    0,
                )
                for v in a.intervals
            ]
            _mark_flagged(interval_rows, first_row, found)
            _widen_spans(touched, meter_id, a.intervals, step)
            register_rows += [
                (meter_id, r.obis, r.read_at, r.energy_wh, source, 1, received_at) for r in a.registers
            ]
        now = self.clock.now()
        direct = self._direct_copy_due()
        self._store_intervals(session, interval_rows, now, result, flags, direct=direct)
        # Registers too are COPYed directly, unless the intervals just found their keys stored (a replay).
        self._store_registers(session, register_rows, now, result, flags, direct=direct and not self._paused)
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
        for rule in flag_store.store_flags(session, flags, now):
            result.flags_raised[rule] = result.flags_raised.get(rule, 0) + 1
        if touched:
            self.gaps.settle_touched(session, touched, now)
        return result

    def _screen(self, session: Session, batch: MeterBatch, result: IngestResult) -> Accepted | None:
        return screen_batch(
            batch,
            lambda meter_id: self.meter_info(session, meter_id),
            result,
            max_clock_skew=self.max_clock_skew,
            max_reading_age=self.max_reading_age,
        )

    def _store_intervals(
        self,
        session: Session,
        rows: list[tuple[Any, ...]],
        now: datetime,
        result: IngestResult,
        flags: list[tuple[int, rules.Flag]],
        *,
        direct: bool,
    ) -> None:
        """Write `bulk.INTERVALS` rows: new keys, duplicates, conflicts, replaced estimates (module docstring).

        Only the first round may be COPYed directly: later rounds repeat keys the first one just wrote.
        """
        for n, batch_rows in enumerate(_rounds(rows, 3)):
            outcome = bulk.write_new_rows(session, bulk.INTERVALS, batch_rows, direct=direct and n == 0)
            self._note_fallback(outcome)
            edited = [c for c in outcome.clashes if c.stored["quality"] == Quality.EDITED.value]
            already_seen = versions.history_energies(session, [batch_rows[c.index] for c in edited])
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
            versions.supersede_intervals(session, replaced, SupersededWhy.REPLACED_BY_ACTUAL, now)
            versions.supersede_intervals(session, conflicts, SupersededWhy.CONFLICT, now)
            result.intervals_stored += outcome.inserted + len(replaced) + len(conflicts)
            result.estimates_replaced += len(replaced)
            result.conflicts += len(conflicts) + against_edit
            result.duplicates += len(batch_rows) - outcome.inserted - len(outcome.clashes) + same_as_edit

    def _store_registers(
        self,
        session: Session,
        rows: list[tuple[Any, ...]],
        now: datetime,
        result: IngestResult,
        flags: list[tuple[int, rules.Flag]],
        *,
        direct: bool,
    ) -> None:
        for n, batch_rows in enumerate(_rounds(rows, 3)):
            outcome = bulk.write_new_rows(session, bulk.REGISTERS, batch_rows, direct=direct and n == 0)
            self._note_fallback(outcome)
            conflicts = [(batch_rows[c.index], c.stored) for c in outcome.clashes]
            versions.supersede_registers(session, conflicts, now)
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

    @property
    def _paused(self) -> bool:
        return self._skip_direct_copy > 0

    def _note_fallback(self, outcome: bulk.WriteOutcome) -> None:
        if outcome.fell_back:
            self._skip_direct_copy = DIRECT_COPY_PAUSE

    # -- gaps (see `gaps.GapWorkflow`) ------------------------------------------------------------------------

    def detect_gaps(
        self,
        session: Session,
        now: datetime,
        meter_ids: Sequence[int] | None = None,
        lookback: timedelta = timedelta(days=2),
        grace: timedelta = timedelta(hours=2),
    ) -> int:
        """Record runs of missing intervals as gaps; the number created or extended (`GapWorkflow`)."""
        return self.gaps.detect_gaps(session, now, meter_ids, lookback, grace)

    def due_rereads(self, session: Session, now: datetime, limit: int = 100) -> list[RereadRequest]:
        """Gaps to ask the meters about now (`GapWorkflow.due_rereads`)."""
        return self.gaps.due_rereads(session, now, limit)

    def mark_reread_requested(self, session: Session, gap_ids: Sequence[int], now: datetime) -> int:
        """Record that the head-end sent a re-read for each gap (`GapWorkflow.mark_reread_requested`)."""
        return self.gaps.mark_reread_requested(session, gap_ids, now)

    def estimate_overdue(
        self, session: Session, now: datetime, reread_timeout: timedelta = timedelta(hours=4)
    ) -> int:
        """Estimate the gaps whose re-read went unanswered; intervals estimated (`GapWorkflow`)."""
        return self.gaps.estimate_overdue(session, now, reread_timeout)

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
        version = versions.edit_interval_row(
            session, meter_id, obis, start, step, energy_wh, reason, editor, now
        )
        for gap_id, g_meter, g_obis, g_start, g_end in queries.unsettled_gaps(session, [meter_id]):
            if g_obis == obis and g_start <= start < g_end:
                self.gaps.settle_gap(session, gap_id, g_meter, g_obis, g_start, g_end, now)
        return version

    # -- completeness ----------------------------------------------------------------------------------------

    def refresh_completeness(
        self, session: Session, meter_ids: Sequence[int], days: Sequence[date]
    ) -> list[tuple[int, completeness.DayCompleteness]]:
        """Recount each meter's import intervals for each site-local day and store the counts."""
        now = self.clock.now()
        obis = self.gaps.gap_obis[0] if self.gaps.gap_obis else ACTIVE_IMPORT_INTERVAL
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


def _mark_flagged(rows: list[tuple[Any, ...]], first: int, found: list[rules.Flag]) -> None:
    """Set the flags bits of `rows[first:]` (one meter's `bulk.INTERVALS` rows) to the rules raised on them."""
    marking = [(f.obis, f.start, f.end, bulk.RULE_BITS[f.rule]) for f in found if f.obis in INTERVAL_OBIS]
    if not marking:
        return  # the usual case: no flag lies on an interval (clock drift, registers), the rows keep 0
    for n in range(first, len(rows)):
        row = rows[n]
        bits = 0
        for obis, start, end, rule_bit in marking:
            if obis == row[1] and start <= row[2] < end:
                bits |= rule_bit
        if bits:
            rows[n] = (*row[:10], bits)


def _widen_spans(
    spans: dict[tuple[int, str], tuple[datetime, datetime]],
    meter_id: int,
    intervals: list[IntervalValue],
    interval_s: int,
) -> None:
    """Widen each (meter, OBIS) span `[first start, last end)` to cover `intervals`, all `interval_s` long."""
    codes = {v.obis for v in intervals}
    step = timedelta(seconds=interval_s)
    for obis in codes:
        if len(codes) == 1:
            starts = [v.interval_start for v in intervals]
        else:
            starts = [v.interval_start for v in intervals if v.obis == obis]
        low, high = min(starts), max(starts) + step
        known = spans.get((meter_id, obis))
        if known is not None:
            low, high = min(known[0], low), max(known[1], high)
        spans[meter_id, obis] = (low, high)


def _conflict_flag(row: tuple[Any, ...], stored: dict[str, Any], outcome: str) -> rules.Flag:
    end = row[2] + timedelta(seconds=row[3])
    reason = (
        f"interval {row[1]} at {row[2].isoformat()} was stored as {stored['energy_wh']} Wh "
        f"({stored['quality']}, version {stored['version']}), the meter now sent {row[4]} Wh: {outcome}"
    )
    return rules.Flag(rules.Rule.CONFLICT, row[1], row[2], end, reason)


def _rounds(rows: list[tuple[Any, ...]], key_length: int) -> list[list[tuple[Any, ...]]]:
    """Split rows so that no list repeats a key: the first of each key first, repeats in later rounds.

    The rows come back in key order, which is the order they are written in anyway: sorting compares keys
    without hashing their instants, and puts repeats side by side.
    """
    ordered = sorted(rows, key=operator.itemgetter(*range(key_length)))
    keys = [row[:key_length] for row in ordered]
    if not any(map(operator.eq, keys, keys[1:])):
        return [ordered] if ordered else []
    rounds: list[list[tuple[Any, ...]]] = []
    n = 0
    for i, row in enumerate(ordered):
        n = n + 1 if i and keys[i] == keys[i - 1] else 0  # the how-many-th value of this key
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(row)
    return rounds
