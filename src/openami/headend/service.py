"""The head-end: frames in (authenticated, de-duplicated, decoded, screened, stored), commands out.

`HeadEnd.handle` is what every transport calls with a batch of frames. It returns only after the batch's
transaction has committed; the transport acknowledges the frames then and only then. If it raises, nothing
of the batch is stored and nothing may be acknowledged, so the transport delivers the frames again later.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter
from sqlalchemy import CursorResult, Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import Clock
from openami.common.errors import ConfigurationError, FrameRejected, NotFoundError, OpenAMIError
from openami.config import Settings
from openami.headend.codec import (
    DATA,
    UP,
    Command,
    Frame,
    Topic,
    check_counter,
    decode_uplink,
    encode_command,
    parse_topic,
    verify,
)
from openami.headend.models import FrameRejection, MeterLink
from openami.headend.replay import (
    WINDOW_SIZE,
    ReplayState,
    sliding_window,
    window_from_signed,
    window_to_signed,
)
from openami.headend.screening import screen_uplink
from openami.headend.stats import REASONS, HandleResult, HeadEndStats, Rejection
from openami.headend.transport import Transport
from openami.readings.interfaces import MeterBatch, ReadingsSink, Source
from openami.registry.interfaces import MeterInfo
from openami.registry.service import RegistryService
from openami.security.meter_keys import MeterKeyError

__all__ = [
    "REASONS",
    "BatchNotCommittedError",
    "HandleResult",
    "HeadEnd",
    "HeadEndStats",
    "MeterDirectory",
    "Rejection",
]

log = structlog.get_logger(__name__)

UNKNOWN_METER_RETRY = timedelta(seconds=60)  # a serial not in the registry is looked up again after this
# A cached meter (site, keys, grace deadline) is looked up again after this, so a key rotated by another process
# (the CLI, the API) reaches a running head-end within it even if no frame fails meanwhile.
METER_CACHE_TTL = timedelta(minutes=5)
MAX_TOPIC_CHARS = 1000
MAX_DETAIL_CHARS = 2000
_LINK_TABLE = cast(Table, MeterLink.__table__)
_REJECTION_TABLE = cast(Table, FrameRejection.__table__)


class MeterDirectory(Protocol):
    """Where the head-end learns a meter's id, site and key (the registry's service)."""

    def meter_by_serial(self, session: Session, serial: str) -> MeterInfo: ...

    def meters_by_serial(self, session: Session, serials: Iterable[str]) -> dict[str, MeterInfo]: ...


class BatchNotCommittedError(OpenAMIError):
    """A batch's transaction failed: nothing of it is stored and none of its frames may be acknowledged."""


class _StaleLinkStateError(Exception):
    """Another worker changed a meter's link state between our read and our write: redo the batch."""


@dataclass(frozen=True, slots=True)
class _Authentic:
    frame: Frame
    topic: Topic
    meter: MeterInfo


@dataclass(slots=True)
class _Link:
    before: ReplayState
    state: ReplayState
    accepted: int = 0
    touched: bool = False


def _dialect_insert(session: Session) -> Any:
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    raise ConfigurationError(f"the head-end supports PostgreSQL and SQLite, not {name}")


def _clip(text: str, limit: int) -> str:
    """`text` fit for a text column: NUL (which PostgreSQL refuses) made visible, and at most `limit` long."""
    text = text.replace("\x00", "\\x00")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class HeadEnd:
    """Turns batches of frames into stored readings, and sends commands to meters."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        sink: ReadingsSink,
        clock: Clock,
        settings: Settings,
        *,
        meters: MeterDirectory | None = None,
        transport: Transport | None = None,
        metrics: CollectorRegistry | None = None,
        max_attempts: int = 3,
    ) -> None:
        self._session_factory = session_factory
        self._sink = sink
        self._clock = clock
        self._settings = settings
        self._meters = meters if meters is not None else RegistryService.from_settings(clock, settings)
        self._transport = transport
        self._max_attempts = max_attempts
        self._lock = threading.Lock()
        # Each cached meter with when it was looked up (one dict, so that an entry is replaced in one step).
        self._by_serial: dict[str, tuple[MeterInfo, datetime]] = {}
        self._unknown_until: dict[str, datetime] = {}
        self._linked: set[int] = set()  # meters known to have a meter_link row
        self._stats = HeadEndStats()
        # A registry per head-end so several head-ends (tests, embedded + server) never share counters.
        self.metrics = metrics if metrics is not None else CollectorRegistry()
        self._frames_total = PromCounter(
            "openami_headend_frames",
            "Uplink frames processed, by outcome (accepted, rejected) and rejection reason.",
            ["outcome", "reason"],
            registry=self.metrics,
        )
        self._readings_total = PromCounter(
            "openami_headend_readings",
            "Readings handed to storage, by result (stored_interval, stored_register, duplicate, conflict).",
            ["result"],
            registry=self.metrics,
        )

    # --- frames in ------------------------------------------------------------------------------------

    def serve(self, transport: Transport) -> None:
        """Use `transport` for commands and start receiving its frames."""
        self._transport = transport
        transport.start(self.handle)

    def handle(self, frames: list[Frame]) -> HandleResult:
        """Process a batch in one transaction and commit; BatchNotCommittedError when nothing was stored."""
        if not frames:
            return HandleResult()
        for _attempt in range(self._max_attempts):
            try:
                result = self._handle_once(frames)
            except _StaleLinkStateError:
                continue
            except SQLAlchemyError as exc:
                with self._lock:
                    self._stats.batches_failed += 1
                log.error("batch_not_committed", frames=len(frames), error=str(exc))
                raise BatchNotCommittedError(f"batch of {len(frames)} frames not committed: {exc}") from exc
            self._after_commit(result)
            return result
        with self._lock:
            self._stats.batches_failed += 1
        raise BatchNotCommittedError(
            f"link state changed under the batch {self._max_attempts} times in a row"
        )

    def _handle_once(self, frames: list[Frame]) -> HandleResult:
        received_at = self._clock.now()
        result = HandleResult(frames=len(frames))

        def reject(frame: Frame, serial: str | None, exc: FrameRejected) -> None:
            result.rejections.append(Rejection(received_at, serial, frame.topic, exc.reason, exc.detail))

        # Phase 1, its own short transaction: who sent what, and make sure each sender has a link row.
        # Creating link rows here, committed, lets phase 2 lock every row it needs with one statement in a
        # stable order, so two workers can never deadlock on them.
        authentic: list[_Authentic] = []
        with self._session_factory() as session, session.begin():
            self._prefetch_senders(session, frames, received_at)
            for frame in frames:
                serial = None
                try:
                    topic = parse_topic(frame.topic)
                    serial = topic.serial
                    if topic.direction != UP:
                        raise FrameRejected("malformed", f"topic {frame.topic!r} is not an uplink topic")
                    check_counter(frame.counter)
                    meter = self._authenticate(session, frame, topic, received_at)
                    authentic.append(_Authentic(frame, topic, meter))
                except FrameRejected as exc:
                    reject(frame, serial, exc)
            self._ensure_links(session, {a.meter.id for a in authentic})

        # Phase 2: anti-replay under row locks, decode, screen, store, commit.
        with self._session_factory() as session, session.begin():
            links = self._lock_links(session, sorted({a.meter.id for a in authentic}))
            batches: list[MeterBatch] = []
            for item in authentic:
                link = links[item.meter.id]
                accepted_state = sliding_window(link.state, item.frame.counter)
                if accepted_state is None:
                    reject(item.frame, item.topic.serial, _replayed(link.state, item.frame.counter))
                    continue
                # An authentic frame's counter is spent even if its content is refused below: the meter did
                # send it, and resending the same bytes must not get a second hearing.
                link.state = accepted_state
                link.touched = True
                try:
                    _site, kind, content = decode_uplink(item.frame)
                    screen_uplink(
                        content,
                        item.meter,
                        received_at,
                        max_clock_skew_s=self._settings.max_clock_skew_s,
                        max_reading_age_days=self._settings.max_reading_age_days,
                    )
                except FrameRejected as exc:
                    reject(item.frame, item.topic.serial, exc)
                    continue
                except Exception as exc:  # a decoder bug must cost one frame, not wedge the batch forever
                    log.exception("frame_decoder_failed", serial=item.topic.serial, topic=item.frame.topic)
                    detail = f"the decoder failed on this frame ({type(exc).__name__})"
                    reject(item.frame, item.topic.serial, FrameRejected("malformed", detail))
                    continue
                link.accepted += 1
                batches.append(
                    MeterBatch(
                        meter_id=item.meter.id,
                        received_at=received_at,
                        source=Source.PUSH if kind == DATA else Source.REREAD,
                        meter_time=content.meter_time,
                        intervals=content.intervals,
                        registers=content.registers,
                        instants=content.instants,
                        events=content.events,
                    )
                )
            self._save_links(session, links, received_at)
            if batches:
                result.ingest = self._sink.ingest(session, batches)
            result.accepted = len(batches)
            if result.rejections:
                session.execute(
                    _REJECTION_TABLE.insert(),
                    [
                        {
                            "received_at": r.received_at,
                            "serial": r.serial,
                            "topic": _clip(r.topic, MAX_TOPIC_CHARS),
                            "reason": r.reason,
                            "detail": _clip(r.detail, MAX_DETAIL_CHARS),
                        }
                        for r in result.rejections
                    ],
                )
        return result

    def _authenticate(self, session: Session, frame: Frame, topic: Topic, now: datetime) -> MeterInfo:
        """The registered meter that signed `frame` (with its key, or its previous key until the grace deadline
        passes at `now`). A cached entry that fails is refreshed once (key rotated, meter moved) before the frame
        is refused."""
        cached = self._cached(topic.serial, now)
        meter = cached or self._lookup(session, topic.serial)
        try:
            return _check_sender(frame, topic, meter, now)
        except FrameRejected:
            if cached is None:
                raise
        self._forget(topic.serial)
        return _check_sender(frame, topic, self._lookup(session, topic.serial), now)

    def _cached(self, serial: str, now: datetime) -> MeterInfo | None:
        """The cached meter, unless it was looked up METER_CACHE_TTL or longer ago."""
        entry = self._by_serial.get(serial)
        if entry is None or now - entry[1] >= METER_CACHE_TTL:
            return None
        return entry[0]

    def _remember(self, meters: dict[str, MeterInfo], now: datetime) -> None:
        self._by_serial.update({serial: (meter, now) for serial, meter in meters.items()})

    def _forget(self, serial: str) -> None:
        self._by_serial.pop(serial, None)

    def _prefetch_senders(self, session: Session, frames: list[Frame], now: datetime) -> None:
        """Cache, in one query, the meters named by `frames` that are not cached (or whose entry is too old):
        a worker's batches would otherwise look each sender up on its own. Unknown ones are left to `_lookup`."""
        serials = set()
        for frame in frames:
            try:
                serials.add(parse_topic(frame.topic).serial)
            except FrameRejected:
                continue  # refused, with its reason, in the loop that follows
        missing = {s for s in serials - self._unknown_until.keys() if self._cached(s, now) is None}
        if not missing:
            return
        try:
            self._remember(self._meters.meters_by_serial(session, missing), now)
        except MeterKeyError:
            # One meter's stored key does not open: look the others up one by one, so only its frames are
            # refused (by `_lookup`, which says why).
            return

    def _lookup(self, session: Session, serial: str) -> MeterInfo:
        now = self._clock.now()
        until = self._unknown_until.get(serial)
        if until is not None and now < until:
            raise FrameRejected("unknown_meter", f"no meter with serial {serial!r} is registered")
        try:
            meter = self._meters.meter_by_serial(session, serial)
        except NotFoundError:
            self._unknown_until[serial] = now + UNKNOWN_METER_RETRY
            raise FrameRejected("unknown_meter", f"no meter with serial {serial!r} is registered") from None
        except MeterKeyError as exc:
            # The frame cannot be authenticated; the operator must fix the configuration or rotate the key.
            log.error("meter_key_unavailable", serial=serial, error=str(exc))
            raise FrameRejected("bad_signature", f"the meter's stored key cannot be used: {exc}") from None
        self._unknown_until.pop(serial, None)
        self._remember({serial: meter}, now)
        return meter

    def _ensure_links(self, session: Session, meter_ids: set[int]) -> None:
        missing = sorted(meter_ids - self._linked)
        if not missing:
            return
        stmt = _dialect_insert(session)(MeterLink.__table__).on_conflict_do_nothing(
            index_elements=["meter_id"]
        )
        session.execute(
            stmt,
            [
                {
                    "meter_id": m,
                    "highest_counter": 0,
                    "replay_window": 0,
                    "frames_accepted": 0,
                    "down_counter": 0,
                }
                for m in missing
            ],
        )
        self._linked.update(missing)

    def _lock_links(self, session: Session, meter_ids: list[int]) -> dict[int, _Link]:
        if not meter_ids:
            return {}
        rows = session.execute(
            select(MeterLink.meter_id, MeterLink.highest_counter, MeterLink.replay_window)
            .where(MeterLink.meter_id.in_(meter_ids))
            .order_by(MeterLink.meter_id)
            .with_for_update()
        ).all()
        links = {}
        for meter_id, highest, window in rows:
            state = ReplayState(highest, window_from_signed(window))
            links[meter_id] = _Link(before=state, state=state)
        if len(links) != len(meter_ids):
            # A link row we believed in is gone (its meter was deleted and re-created): forget and redo.
            self._linked.difference_update(set(meter_ids) - set(links))
            raise _StaleLinkStateError
        return links

    def _save_links(self, session: Session, links: dict[int, _Link], received_at: datetime) -> None:
        touched = [(meter_id, link) for meter_id, link in links.items() if link.touched]
        if not touched:
            return
        table = _LINK_TABLE
        # Conditional on the state we read, so a concurrent writer that slipped past the row lock (SQLite has
        # none) makes this update miss instead of silently accepting a counter twice.
        stmt = (
            update(table)
            .where(
                table.c.meter_id == bindparam("b_meter_id"),
                table.c.highest_counter == bindparam("b_old_highest"),
                table.c.replay_window == bindparam("b_old_window"),
            )
            .values(
                highest_counter=bindparam("b_highest"),
                replay_window=bindparam("b_window"),
                last_frame_at=bindparam("b_at", type_=table.c.last_frame_at.type),
                frames_accepted=table.c.frames_accepted + bindparam("b_accepted"),
            )
        )
        params = [
            {
                "b_meter_id": meter_id,
                "b_old_highest": link.before.highest,
                "b_old_window": window_to_signed(link.before.window),
                "b_highest": link.state.highest,
                "b_window": window_to_signed(link.state.window),
                "b_at": received_at,
                "b_accepted": link.accepted,
            }
            for meter_id, link in touched
        ]
        updated = cast(CursorResult[Any], session.execute(stmt, params)).rowcount
        if updated != len(params):
            raise _StaleLinkStateError

    def _after_commit(self, result: HandleResult) -> None:
        with self._lock:
            self._stats.add(result)
        if result.accepted:
            self._frames_total.labels("accepted", "").inc(result.accepted)
        for rejection in result.rejections:
            self._frames_total.labels("rejected", rejection.reason).inc()
            log.warning(
                "frame_rejected",
                reason=rejection.reason,
                serial=rejection.serial,
                topic=rejection.topic,
                detail=rejection.detail,
            )
        ingest = result.ingest
        for name, n in (
            ("stored_interval", ingest.intervals_stored),
            ("stored_register", ingest.registers_stored),
            ("duplicate", ingest.duplicates),
            ("conflict", ingest.conflicts),
        ):
            if n:
                self._readings_total.labels(name).inc(n)

    @property
    def stats(self) -> HeadEndStats:
        """A copy of the running totals."""
        with self._lock:
            s = self._stats
            by_readings = dict(s.values_rejected_by_readings)
            return replace(s, rejected=dict(s.rejected), values_rejected_by_readings=by_readings)

    # --- commands out ---------------------------------------------------------------------------------

    def send_command(self, serial: str, command: Command) -> Frame:
        """Sign `command` with the meter's key and next down-link counter, and publish it. Returns the frame.

        The counter is committed before publishing: a command lost on the way only leaves a gap in the
        counters, which meters accept, while a counter reused after a crash would be refused as a replay.
        """
        if self._transport is None:
            raise ConfigurationError("the head-end has no transport to send commands with")
        table = _LINK_TABLE
        with self._session_factory() as session, session.begin():
            meter = self._cached(serial, self._clock.now())
            if meter is None:
                try:
                    meter = self._meters.meter_by_serial(session, serial)
                except NotFoundError:
                    raise NotFoundError(
                        f"no meter with serial {serial!r} to send {command.name!r} to"
                    ) from None
            self._ensure_links(session, {meter.id})
            counter = session.execute(
                update(table)
                .where(table.c.meter_id == meter.id)
                .values(down_counter=table.c.down_counter + 1)
                .returning(table.c.down_counter)
            ).scalar_one_or_none()
            if counter is None:  # the link row vanished since we cached it: create it in this transaction
                self._linked.discard(meter.id)
                self._ensure_links(session, {meter.id})
                counter = session.execute(
                    update(table)
                    .where(table.c.meter_id == meter.id)
                    .values(down_counter=table.c.down_counter + 1)
                    .returning(table.c.down_counter)
                ).scalar_one()
        frame = encode_command(
            command,
            key=meter.auth_key,
            counter=counter,
            topic_root=self._settings.mqtt_topic_root,
            site_code=meter.site_code,
            serial=serial,
        )
        self._transport.publish_command(frame)
        with self._lock:
            self._stats.commands_sent += 1
        log.info("command_sent", serial=serial, command=command.name, request_id=command.request_id)
        return frame


def _check_sender(frame: Frame, topic: Topic, meter: MeterInfo, now: datetime) -> MeterInfo:
    """`meter` if it signed `frame`: with its key, or with its previous key while `now` is before the grace
    deadline of a rotation (frames in flight, a meter not yet re-keyed in the field)."""
    if meter.site_code != topic.site_code:
        raise FrameRejected(
            "unknown_meter",
            f"meter {topic.serial!r} belongs to site {meter.site_code!r}, not {topic.site_code!r}",
        )
    try:
        verify(frame, meter.auth_key)
    except FrameRejected:
        previous, until = meter.previous_auth_key, meter.previous_key_until
        if previous is None or until is None or now >= until:
            raise
        verify(frame, previous)
    return meter


def _replayed(state: ReplayState, counter: int) -> FrameRejected:
    if state.highest - counter >= WINDOW_SIZE:
        return FrameRejected(
            "replayed", f"counter {counter} is 64 or more below the highest accepted, {state.highest}"
        )
    return FrameRejected("replayed", f"counter {counter} was already accepted (highest {state.highest})")
