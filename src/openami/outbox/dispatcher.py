"""Running handlers for outbox events, by topic: claim a batch, then give each event its own transaction in which
the event is marked done and its handler runs, committed together; a handler that raises rolls back and the
event is failed (retried after backoff, or dead) in a transaction of its own.

The completion is written before the handler runs: on PostgreSQL the event's row is then locked by this
transaction until it commits, so no other worker can take the event over while its handler is still running,
even if the lease runs out meanwhile; and a worker whose lease was already taken over learns it before running
the handler at all. A handler that writes only to the database therefore takes effect exactly once. A handler
with outside effects (an e-mail, a payment provider's API) can repeat after a crash between sending and
committing, so it passes `event.idempotency_key` to the outside service.
"""

from __future__ import annotations

import enum
import os
import socket
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from openami.common.errors import ConflictError, NotFoundError, ValidationError
from openami.outbox.interfaces import EventStatus, OutboxEvent
from openami.outbox.service import OutboxService
from openami.storage.db import unit_of_work

log = structlog.get_logger(__name__)


class Handler(Protocol):
    """Does what an event asks, in `session` (the transaction that marks the event done; never commit it).
    Raising any Exception fails the attempt; its type and message become the event's `last_error`."""

    def __call__(self, session: Session, event: OutboxEvent) -> None: ...


class Outcome(enum.StrEnum):
    COMPLETED = "completed"  # the handler's writes and the completion committed
    RETRY = "retry"  # the handler raised; the event waits for its next attempt
    DEAD = "dead"  # the handler raised on the last allowed attempt
    LOST = "lost"  # another worker holds the event now (this worker's lease ran out): nothing was done


@dataclass(frozen=True, slots=True)
class DispatchReport:
    claimed: int = 0
    completed: int = 0
    retried: int = 0
    dead: int = 0
    lost: int = 0
    released: int = 0  # claimed, then given back unhandled because the dispatcher was asked to stop

    def __add__(self, other: DispatchReport) -> DispatchReport:
        return DispatchReport(
            self.claimed + other.claimed,
            self.completed + other.completed,
            self.retried + other.retried,
            self.dead + other.dead,
            self.lost + other.lost,
            self.released + other.released,
        )


def default_worker_name() -> str:
    """Host, process and a random suffix: unique per dispatcher, even for several threads of one process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Dispatcher:
    """Runs `handlers` (topic -> handler) for the events of their topics. `run_once` handles one batch (the
    embedded mode calls it, or `drain`, after its writes); `run_forever` is a worker's loop. One dispatcher
    per thread; run as many, in as many processes, as the load needs."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        outbox: OutboxService,
        handlers: Mapping[str, Handler],
        *,
        worker: str | None = None,
        batch_size: int = 50,
        lease_s: float = 300.0,
        idle_wait_s: float = 1.0,
    ) -> None:
        if not handlers:
            raise ValidationError("a dispatcher needs at least one handler", "Dispatcher(handlers=...)")
        if batch_size < 1 or lease_s <= 0 or idle_wait_s < 0:
            raise ValidationError(
                f"need batch_size >= 1, lease_s > 0 and idle_wait_s >= 0; got {batch_size}, {lease_s}, "
                f"{idle_wait_s}",
                "Dispatcher(...)",
            )
        self._factory = factory
        self._outbox = outbox
        self._handlers = dict(handlers)
        self.worker = worker or default_worker_name()
        self._batch_size = batch_size
        self._lease_s = lease_s
        self._idle_wait_s = idle_wait_s

    def run_once(self, stop: threading.Event | None = None) -> DispatchReport:
        """Claim one batch and handle it. When `stop` is set between two events, the rest of the batch is
        released for other workers rather than left leased."""
        with unit_of_work(self._factory) as session:
            events = self._outbox.claim(
                session,
                topics=self._handlers.keys(),
                worker=self.worker,
                limit=self._batch_size,
                lease_s=self._lease_s,
            )
        tally = dict.fromkeys(Outcome, 0)
        released = 0
        for index, event in enumerate(events):
            if stop is not None and stop.is_set():
                with unit_of_work(self._factory) as session:
                    released = self._outbox.release(session, [e.id for e in events[index:]], self.worker)
                break
            tally[self.process(event)] += 1
        return DispatchReport(
            claimed=len(events),
            completed=tally[Outcome.COMPLETED],
            retried=tally[Outcome.RETRY],
            dead=tally[Outcome.DEAD],
            lost=tally[Outcome.LOST],
            released=released,
        )

    def drain(self, max_batches: int = 1000) -> DispatchReport:
        """Handle batches until none is due (events waiting for a retry's backoff stay), at most `max_batches`."""
        total = DispatchReport()
        for _ in range(max_batches):
            report = self.run_once()
            total += report
            if report.claimed == 0:
                break
        return total

    def run_forever(self, stop: threading.Event) -> None:
        """Handle batches until `stop` is set, waiting `idle_wait_s` whenever nothing is due. A database error
        (the server restarting, say) is logged and the loop goes on after the same wait; leases of events in
        hand then run out and other workers, or this one, claim them again."""
        log.info("outbox.worker_started", worker=self.worker, topics=sorted(self._handlers))
        while not stop.is_set():
            try:
                report = self.run_once(stop)
            except SQLAlchemyError:
                log.exception("outbox.database_error", worker=self.worker)
                stop.wait(self._idle_wait_s)
                continue
            if report.claimed == 0:
                stop.wait(self._idle_wait_s)
        log.info("outbox.worker_stopped", worker=self.worker)

    def process(self, event: OutboxEvent) -> Outcome:
        """Handle one event this dispatcher's worker has claimed."""
        handler = self._handlers[event.topic]
        session = self._factory()
        try:
            try:
                self._outbox.complete(session, event.id, self.worker)
            except (ConflictError, NotFoundError) as exc:
                session.rollback()
                log.warning("outbox.lost", event_id=event.id, worker=self.worker, reason=str(exc))
                return Outcome.LOST
            try:
                handler(session, event)
                session.commit()
            except Exception as exc:
                session.rollback()
                error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "outbox.handler_failed", event_id=event.id, topic=event.topic, error=error, exc_info=True
                )
            else:
                return Outcome.COMPLETED
        finally:
            session.close()
        try:
            with unit_of_work(self._factory) as session:
                failed = self._outbox.fail(session, event.id, self.worker, error)
        except (ConflictError, NotFoundError) as exc:
            log.warning("outbox.lost", event_id=event.id, worker=self.worker, reason=str(exc))
            return Outcome.LOST
        return Outcome.DEAD if failed.status is EventStatus.DEAD else Outcome.RETRY
