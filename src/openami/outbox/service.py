"""Emitting, claiming, completing and failing outbox events, and looking at them. Every method takes the caller's
session and never commits: an event is emitted in the transaction of the change it announces, and a handler's
writes commit together with the completion of its event.

How a claim keeps two workers off one event: on PostgreSQL the candidate rows are read `FOR UPDATE SKIP LOCKED`,
so a second worker skips what the first is taking and takes the next rows; on SQLite one statement
(`UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING`) picks and leases the rows under the database's single
write lock. Either way a claimed event carries a lease (`locked_by`, `locked_until`): a worker that dies leaves
its events to be claimed again once the lease runs out, and `complete` and `fail` refuse a worker whose lease
another worker has since taken over.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import Row, Table, and_, case, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from openami.common.clock import Clock, ensure_aware
from openami.common.errors import ConfigurationError, ConflictError, NotFoundError, ValidationError
from openami.outbox.interfaces import EventState, EventStatus, OutboxEvent, TopicCount
from openami.outbox.models import KEY_MAX_LEN, TOPIC_MAX_LEN, WORKER_MAX_LEN, OutboxEventRow
from openami.outbox.retry import RetryPolicy

log = structlog.get_logger(__name__)

TOPIC_SHAPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
ERROR_MAX_LEN = 4000  # enough for a message and its cause; a whole traceback goes to the log instead

_TABLE = cast("Table", OutboxEventRow.__table__)
_T = _TABLE.c


class OutboxService:
    """The outbox of one database. `policy` is the retry schedule of every topic not in `topic_policies`; `rng`
    draws the backoff jitter (pass a seeded `random.Random` for a reproducible schedule)."""

    def __init__(
        self,
        clock: Clock,
        *,
        policy: RetryPolicy | None = None,
        topic_policies: Mapping[str, RetryPolicy] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._clock = clock
        self._policy = policy or RetryPolicy()
        self._topic_policies = dict(topic_policies or {})
        self._rng = rng or random.Random()

    def policy_for(self, topic: str) -> RetryPolicy:
        return self._topic_policies.get(topic, self._policy)

    # -- producing ---------------------------------------------------------------------------------------------

    def emit(
        self,
        session: Session,
        *,
        topic: str,
        key: str,
        payload: Mapping[str, Any],
        site_id: int | None = None,
        available_at: datetime | None = None,
    ) -> int | None:
        """Add an event to the caller's transaction; it exists only if that transaction commits.

        Returns the new event's id, or None when an event of `topic` with `key` already exists: the first one is
        kept unchanged (its payload too), so an emitter that repeats itself (a replayed webhook, a retried
        request) announces its change once. The payload must be a JSON object that reads back exactly as
        written: string keys, lists not tuples, Decimals and instants as text (ISO 8601 for instants).
        """
        where = f"outbox.emit(topic={topic!r}, key={key!r})"
        _check_topic(topic, where)
        if not key or len(key) > KEY_MAX_LEN:
            raise ValidationError(f"the key must be 1 to {KEY_MAX_LEN} characters, got {len(key)}", where)
        document = _json_object(payload, where)
        now = self._clock.now()
        values: dict[str, Any] = {
            "topic": topic,
            "dedupe_key": key,
            "payload": document,
            "site_id": site_id,
            "created_at": now,
            "available_at": now if available_at is None else _aware(available_at, "available_at", where),
            "attempts": 0,
            "status": EventStatus.PENDING.value,
        }
        # ON CONFLICT on the (topic, key) constraint alone: a duplicate inserts nothing and, unlike a caught
        # IntegrityError, leaves the caller's PostgreSQL transaction usable.
        insert = postgresql_insert if _dialect(session) == "postgresql" else sqlite_insert
        statement = (
            insert(_TABLE).values(values).on_conflict_do_nothing(index_elements=["topic", "dedupe_key"])
        )
        new_id: int | None = session.execute(statement.returning(_T.id)).scalar_one_or_none()
        if new_id is None:
            log.info("outbox.duplicate_ignored", topic=topic, key=key)
        return new_id

    # -- consuming ---------------------------------------------------------------------------------------------

    def claim(
        self, session: Session, *, topics: Collection[str], worker: str, limit: int, lease_s: float
    ) -> list[OutboxEvent]:
        """Lease up to `limit` events of `topics` that are due and not leased, oldest `available_at` first, to
        `worker` for `lease_s` seconds, and count the attempt. Commit the caller's transaction before handling
        them, so other workers see the lease.

        An event whose previous lease ran out after its last allowed attempt (its worker died every time) is
        not handed out again but marked dead here, so a poison event cannot crash workers forever.
        """
        where = f"outbox.claim(worker={worker!r})"
        _check_worker(worker, where)
        if limit < 1:
            raise ValidationError(f"limit must be at least 1, got {limit}", where)
        if lease_s <= 0:
            raise ValidationError(f"lease_s must be positive, got {lease_s}", where)
        if not topics:
            return []
        now = self._clock.now()
        claimable = and_(
            _T.status == EventStatus.PENDING.value,
            _T.topic.in_(sorted(topics)),
            _T.available_at <= now,
            or_(_T.locked_until.is_(None), _T.locked_until <= now),
        )
        oldest_first = select(_T.id).where(claimable).order_by(_T.available_at, _T.id).limit(limit)
        if _dialect(session) == "postgresql":
            ids = list(session.scalars(oldest_first.with_for_update(skip_locked=True)))
            if not ids:
                return []
            chosen = _T.id.in_(ids)
        else:
            chosen = _T.id.in_(oldest_first.scalar_subquery())
        leased = session.execute(
            update(_TABLE)
            .where(chosen, claimable)
            .values(locked_by=worker, locked_until=now + timedelta(seconds=lease_s), attempts=_T.attempts + 1)
            .returning(*_TABLE.columns)
        ).all()
        events = sorted((_event(row) for row in leased), key=lambda e: (e.available_at, e.id))
        exhausted = [e for e in events if self.policy_for(e.topic).gives_up_after(e.attempts - 1)]
        for event in exhausted:
            tried = event.attempts - 1
            reason = f"abandoned: the lease of attempt {tried} of {tried} ran out without a completion or a failure"
            if event.last_error:
                reason = f"{reason}; the error before: {event.last_error}"
            session.execute(
                update(_TABLE)
                .where(_T.id == event.id, _T.locked_by == worker)
                .values(
                    status=EventStatus.DEAD.value,
                    dead_at=now,
                    attempts=tried,
                    locked_by=None,
                    locked_until=None,
                    last_error=reason[:ERROR_MAX_LEN],
                )
            )
            log.warning("outbox.dead", event_id=event.id, topic=event.topic, attempts=tried, reason=reason)
        buried = {e.id for e in exhausted}
        return [e for e in events if e.id not in buried]

    def complete(self, session: Session, event_id: int, worker: str) -> None:
        """Mark an event that `worker` holds done, in the caller's transaction (the one its handler writes in).

        Raises ConflictError when the worker no longer holds it (its lease ran out and another worker claimed
        it, or it is done or dead), so the caller rolls its handler's writes back; NotFoundError for no event.
        """
        now = self._clock.now()
        done = session.execute(
            update(_TABLE)
            .where(_T.id == event_id, _T.status == EventStatus.PENDING.value, _T.locked_by == worker)
            .values(status=EventStatus.DONE.value, done_at=now, locked_by=None, locked_until=None)
            .returning(_T.id)
        ).scalar_one_or_none()
        if done is None:
            raise self._not_held(session, event_id, worker, "complete")

    def fail(self, session: Session, event_id: int, worker: str, error: str) -> OutboxEvent:
        """Record that `worker`'s attempt at an event failed with `error`, release it, and either schedule the
        next attempt after the topic's backoff or, after its last allowed attempt, mark it dead. Returns the
        event as it now is. Raises ConflictError / NotFoundError as `complete` does."""
        _check_worker(worker, f"outbox.fail(event_id={event_id})")
        now = self._clock.now()
        # Writing first takes SQLite's write lock at once, and on PostgreSQL the row lock.
        released = session.execute(
            update(_TABLE)
            .where(_T.id == event_id, _T.status == EventStatus.PENDING.value, _T.locked_by == worker)
            .values(locked_by=None, locked_until=None, last_error=(error or "(no message)")[:ERROR_MAX_LEN])
            .returning(_T.topic, _T.attempts)
        ).one_or_none()
        if released is None:
            raise self._not_held(session, event_id, worker, "fail")
        topic, attempts = released
        policy = self.policy_for(topic)
        if policy.gives_up_after(attempts):
            changes: dict[str, Any] = {"status": EventStatus.DEAD.value, "dead_at": now}
            log.warning("outbox.dead", event_id=event_id, topic=topic, attempts=attempts, error=error)
        else:
            changes = {"available_at": now + policy.delay(attempts, self._rng)}
            log.info("outbox.retry", event_id=event_id, topic=topic, attempts=attempts, error=error)
        session.execute(update(_TABLE).where(_T.id == event_id).values(changes))
        return self.get(session, event_id)

    def release(self, session: Session, event_ids: Collection[int], worker: str) -> int:
        """Give back events `worker` claimed but will not handle (it is stopping), uncounting the attempt, so
        other workers need not wait for the lease to run out. Returns how many were still held."""
        if not event_ids:
            return 0
        released = session.execute(
            update(_TABLE)
            .where(
                _T.id.in_(sorted(event_ids)), _T.status == EventStatus.PENDING.value, _T.locked_by == worker
            )
            .values(locked_by=None, locked_until=None, attempts=_T.attempts - 1)
            .returning(_T.id)
        ).all()
        return len(released)

    # -- operating ---------------------------------------------------------------------------------------------

    def get(self, session: Session, event_id: int) -> OutboxEvent:
        row = session.execute(select(*_TABLE.columns).where(_T.id == event_id)).one_or_none()
        if row is None:
            raise NotFoundError(f"outbox event {event_id} does not exist")
        return _event(row)

    def counts(self, session: Session, *, site_id: int | None = None) -> list[TopicCount]:
        """How many events each topic has in each state (pending, in flight, done, dead), optionally of one
        site; states without events are left out."""
        now = self._clock.now()
        state = case(
            (
                and_(_T.status == EventStatus.PENDING.value, _T.locked_until > now),
                EventState.IN_FLIGHT.value,
            ),
            else_=_T.status,
        ).label("state")
        query = select(_T.topic, state, func.count()).group_by(_T.topic, state)
        if site_id is not None:
            query = query.where(_T.site_id == site_id)
        rows = session.execute(query).all()
        return sorted(
            (TopicCount(topic, EventState(str(s)), int(n)) for topic, s, n in rows),
            key=lambda c: (c.topic, list(EventState).index(c.state)),
        )

    def dead_events(
        self, session: Session, *, topic: str | None = None, site_id: int | None = None, limit: int = 100
    ) -> list[OutboxEvent]:
        """The dead events, most recently given up first, with their last errors."""
        query = select(*_TABLE.columns).where(_T.status == EventStatus.DEAD.value)
        if topic is not None:
            query = query.where(_T.topic == topic)
        if site_id is not None:
            query = query.where(_T.site_id == site_id)
        rows = session.execute(query.order_by(_T.dead_at.desc(), _T.id.desc()).limit(limit)).all()
        return [_event(row) for row in rows]

    def requeue_dead(self, session: Session, event_id: int) -> OutboxEvent:
        """Give a dead event a fresh set of attempts, due now (once whatever made it fail is fixed). Its last
        error stays until the next attempt overwrites it. The caller records who asked in the audit log."""
        now = self._clock.now()
        revived = session.execute(
            update(_TABLE)
            .where(_T.id == event_id, _T.status == EventStatus.DEAD.value)
            .values(status=EventStatus.PENDING.value, dead_at=None, attempts=0, available_at=now)
            .returning(_T.id)
        ).scalar_one_or_none()
        if revived is None:
            current = self.get(session, event_id)
            raise ConflictError(f"outbox event {event_id} is {current.status}, not dead: nothing to requeue")
        return self.get(session, event_id)

    def purge_done(self, session: Session, *, done_before: datetime) -> int:
        """Delete the events done before `done_before`; returns how many. A key emitted again after its event
        is purged makes a new event, so keep done events longer than any emitter may repeat itself."""
        cutoff = _aware(done_before, "done_before", "outbox.purge_done")
        purged = session.execute(
            delete(_TABLE).where(_T.status == EventStatus.DONE.value, _T.done_at < cutoff).returning(_T.id)
        ).all()
        return len(purged)

    def _not_held(self, session: Session, event_id: int, worker: str, verb: str) -> ConflictError:
        current = self.get(session, event_id)  # raises NotFoundError when there is no such event
        holder = f"leased by {current.locked_by!r}" if current.locked_by else "not leased"
        return ConflictError(
            f"outbox event {event_id}: worker {worker!r} cannot {verb} it: it is {current.status} and {holder}"
        )


def _dialect(session: Session) -> str:
    name = session.get_bind().dialect.name
    if name not in ("postgresql", "sqlite"):
        raise ConfigurationError(f"the outbox runs on PostgreSQL or SQLite, not {name}")
    return name


def _check_topic(topic: str, where: str) -> None:
    if len(topic) > TOPIC_MAX_LEN or not TOPIC_SHAPE.fullmatch(topic):
        raise ValidationError(
            f"a topic is dotted lower-case words such as 'payment.received', at most {TOPIC_MAX_LEN} "
            f"characters; got {topic!r}",
            where,
        )


def _check_worker(worker: str, where: str) -> None:
    if not worker or len(worker) > WORKER_MAX_LEN:
        raise ValidationError(f"a worker name is 1 to {WORKER_MAX_LEN} characters, got {worker!r}", where)


def _aware(instant: datetime, name: str, where: str) -> datetime:
    try:
        return ensure_aware(instant, name)
    except ValueError as exc:
        raise ValidationError(str(exc), where) from exc


def _json_object(payload: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The payload as it will be read back: its JSON form, parsed. Refuses what JSON cannot carry exactly."""
    if not isinstance(payload, Mapping):
        raise ValidationError(
            f"the payload must be a JSON object (a mapping), got {type(payload).__name__}", where
        )
    try:
        text = json.dumps(dict(payload), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"the payload has no JSON form: {exc}", where) from exc
    document: dict[str, Any] = json.loads(text)
    if document != dict(payload):
        raise ValidationError(
            "the payload would not read back as written (keys must be strings; tuples become lists)", where
        )
    return document


def _event(row: Row[Any]) -> OutboxEvent:
    m = row._mapping
    return OutboxEvent(
        id=m["id"],
        topic=m["topic"],
        key=m["dedupe_key"],
        payload=m["payload"],
        site_id=m["site_id"],
        created_at=m["created_at"],
        available_at=m["available_at"],
        attempts=m["attempts"],
        status=EventStatus(m["status"]),
        locked_by=m["locked_by"],
        locked_until=m["locked_until"],
        done_at=m["done_at"],
        dead_at=m["dead_at"],
        last_error=m["last_error"],
    )
