"""The collection round: find gaps, ask meters to re-read them, estimate what stays missing.

Run periodically by the worker (server) or the demo loop (embedded). Each step commits on its own, so a crash
between steps loses nothing: a gap found but not yet requested is requested next round, and a request
sent twice is answered twice, which storage takes as an identical duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from openami.common.errors import NotFoundError
from openami.headend.codec import reread_command
from openami.headend.service import HeadEnd
from openami.readings.service import ReadingsService

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class CollectionRound:
    """What one round did."""

    gaps_found: int = 0
    rereads_requested: int = 0
    intervals_estimated: int = 0

    def add(self, other: CollectionRound) -> None:
        self.gaps_found += other.gaps_found
        self.rereads_requested += other.rereads_requested
        self.intervals_estimated += other.intervals_estimated


# An arbitrary constant naming "the collection round" among PostgreSQL advisory locks.
_ROUND_LOCK_KEY = 0x6F70656E616D69


def _try_round_lock(session: Session) -> bool:
    if session.get_bind().dialect.name != "postgresql":
        return True  # SQLite is embedded: one process, one round at a time already
    return bool(session.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _ROUND_LOCK_KEY}).scalar_one())


def _release_round_lock(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _ROUND_LOCK_KEY})
        session.commit()


class CollectionJobs:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        readings: ReadingsService,
        headend: HeadEnd,
        *,
        lookback: timedelta = timedelta(days=2),
        grace: timedelta = timedelta(hours=2),
        reread_timeout: timedelta = timedelta(hours=4),
        reread_batch: int = 500,
    ) -> None:
        self._session_factory = session_factory
        self._readings = readings
        self._headend = headend
        self._lookback = lookback
        self._grace = grace
        self._reread_timeout = reread_timeout
        self._reread_batch = reread_batch

    def run_once(self, now: datetime) -> CollectionRound:
        """One round; on PostgreSQL a round already running in another worker makes this one a no-op."""
        with self._session_factory() as guard:
            if not _try_round_lock(guard):
                return CollectionRound()
            try:
                return self._run(now)
            finally:
                _release_round_lock(guard)

    def _run(self, now: datetime) -> CollectionRound:
        done = CollectionRound()
        with self._session_factory() as session, session.begin():
            done.gaps_found = self._readings.detect_gaps(
                session, now, lookback=self._lookback, grace=self._grace
            )
        done.rereads_requested = self._request_rereads(now)
        with self._session_factory() as session, session.begin():
            done.intervals_estimated = self._readings.estimate_overdue(
                session, now, reread_timeout=self._reread_timeout
            )
        if done.gaps_found or done.rereads_requested or done.intervals_estimated:
            log.info(
                "collection_round",
                at=now.isoformat(),
                gaps_found=done.gaps_found,
                rereads_requested=done.rereads_requested,
                intervals_estimated=done.intervals_estimated,
            )
        return done

    def _request_rereads(self, now: datetime) -> int:
        with self._session_factory() as session, session.begin():
            due = self._readings.due_rereads(session, now, limit=self._reread_batch)
            serials = {r.meter_id: self._readings.meter_info(session, r.meter_id).serial for r in due}
            # Marked before sending, in the same transaction: a crash after this commit re-sends after the
            # back-off, never forgets; the meter's answer is idempotent.
            self._readings.mark_reread_requested(session, [r.gap_id for r in due], now)
        sent = 0
        for request in due:
            try:
                self._headend.send_command(
                    serials[request.meter_id], reread_command(request.request_id, request.start, request.end)
                )
            except NotFoundError:
                log.warning("reread_for_unknown_meter", meter_id=request.meter_id, gap_id=request.gap_id)
                continue
            sent += 1
        return sent
