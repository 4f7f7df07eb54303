"""The outbox on real PostgreSQL, built by the migrations: emitting in the caller's transaction, deduplication
under concurrent emitters, two consumers splitting 1,000 events with SKIP LOCKED, and consumer processes killed
with SIGKILL mid-batch losing and doubling nothing.

Run as a script (`python -m tests.integration.test_outbox_postgres URL START WORKER`), this module is the consumer
process the SIGKILL test starts and kills.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.outbox.dispatcher import Dispatcher, DispatchReport
from openami.outbox.interfaces import EventStatus, OutboxEvent
from openami.outbox.models import OutboxEventRow
from openami.outbox.service import OutboxService
from openami.storage import migrate
from openami.storage.db import make_engine, make_session_factory, unit_of_work

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
TOPIC = "test.effect"
REPO = Path(__file__).resolve().parents[2]
KILL_ROUNDS = 10
LEASE_S = 60.0


def write_effect(session: Session, event: OutboxEvent, worker: str) -> None:
    """What the handlers here do: one row per run, with no unique key, so a doubled run would show."""
    session.execute(
        text("INSERT INTO effect (event_id, worker) VALUES (:e, :w)"), {"e": event.id, "w": worker}
    )


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE effect (event_id BIGINT NOT NULL, worker TEXT NOT NULL)"))
    yield engine
    engine.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


def emit_many(factory: sessionmaker[Session], outbox: OutboxService, count: int) -> list[int]:
    with unit_of_work(factory) as session:
        ids = [outbox.emit(session, topic=TOPIC, key=f"k{i}", payload={"i": i}) for i in range(count)]
    assert None not in ids
    return [i for i in ids if i is not None]


def tally(factory: sessionmaker[Session]) -> tuple[int, int, int, int]:
    """(effect rows, distinct events with an effect, done events, pending events under a lease)."""
    with factory() as session:
        rows, distinct = session.execute(text("SELECT count(*), count(DISTINCT event_id) FROM effect")).one()
        done = session.scalar(
            select(func.count()).select_from(OutboxEventRow).where(OutboxEventRow.status == EventStatus.DONE)
        )
        leased = session.scalar(
            select(func.count())
            .select_from(OutboxEventRow)
            .where(OutboxEventRow.status == EventStatus.PENDING, OutboxEventRow.locked_by.is_not(None))
        )
    return int(rows), int(distinct), int(done or 0), int(leased or 0)


pytestmark = pytest.mark.integration


def test_an_event_emitted_in_a_rolled_back_transaction_does_not_exist(factory: sessionmaker[Session]) -> None:
    outbox = OutboxService(ManualClock(T0))
    with factory() as session:
        assert outbox.emit(session, topic=TOPIC, key="k", payload={}) is not None
        session.rollback()
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(OutboxEventRow)) == 0


def test_concurrent_emitters_of_one_key_make_one_event(factory: sessionmaker[Session]) -> None:
    outbox = OutboxService(ManualClock(T0))
    start = threading.Barrier(4)
    results: list[int | None] = []

    def emitter(n: int) -> None:
        start.wait()
        with unit_of_work(factory) as session:
            results.append(outbox.emit(session, topic="payment.received", key="pay-1", payload={"n": n}))

    threads = [threading.Thread(target=emitter, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 4
    assert sum(r is not None for r in results) == 1
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(OutboxEventRow)) == 1
        # The emitter whose transaction wrote the row is still usable: a duplicate did not abort it.
        assert outbox.emit(session, topic="payment.received", key="pay-2", payload={}) is not None


def test_two_concurrent_consumers_split_1000_events_without_overlap(factory: sessionmaker[Session]) -> None:
    outbox = OutboxService(ManualClock(T0))
    ids = emit_many(factory, outbox, 1000)
    start = threading.Barrier(2)
    reports: dict[str, DispatchReport] = {}

    def consumer(worker: str) -> None:
        def handle(session: Session, event: OutboxEvent) -> None:
            write_effect(session, event, worker)

        dispatcher = Dispatcher(
            factory, outbox, {TOPIC: handle}, worker=worker, batch_size=20, lease_s=LEASE_S
        )
        start.wait()
        reports[worker] = dispatcher.drain()

    threads = [threading.Thread(target=consumer, args=(w,)) for w in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert set(reports) == {"a", "b"}
    assert reports["a"].completed + reports["b"].completed == 1000
    assert reports["a"].lost == reports["b"].lost == 0
    assert reports["a"].completed > 0
    assert reports["b"].completed > 0
    with factory() as session:
        effects = session.execute(text("SELECT event_id, worker FROM effect")).all()
        done_by = dict(
            session.execute(
                select(OutboxEventRow.id, OutboxEventRow.attempts).where(
                    OutboxEventRow.status == EventStatus.DONE
                )
            ).all()
        )
    assert sorted(int(e) for e, _ in effects) == sorted(ids)  # every event once, none twice
    assert len(done_by) == 1000
    assert set(done_by.values()) == {1}  # nothing was claimed twice
    assert sum(1 for _, w in effects if w == "a") == reports["a"].completed


@pytest.mark.slow
def test_consumers_killed_mid_batch_lose_nothing_and_double_nothing(
    factory: sessionmaker[Session], pg_url: str, tmp_path: Path
) -> None:
    outbox = OutboxService(ManualClock(T0))
    ids = emit_many(factory, outbox, 600)
    rng = random.Random(20261125)
    caught_mid_batch = 0
    for round_no in range(KILL_ROUNDS):
        # Each consumer's clock is past the leases of the one killed before it, as a restarted worker's would be.
        start = T0 + timedelta(minutes=10 * round_no)
        before = tally(factory)[0]
        stderr = (tmp_path / f"consumer-{round_no}.err").open("w")
        consumer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.test_outbox_postgres",
                pg_url,
                start.isoformat(),
                f"c{round_no}",
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + 20
            while (
                tally(factory)[0] == before
            ):  # wait until it is handling events, then kill it at a random moment
                assert consumer.poll() is None, (tmp_path / f"consumer-{round_no}.err").read_text()
                assert time.monotonic() < deadline, "the consumer handled nothing in 20 s"
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.15))
            assert consumer.poll() is None, "the consumer finished before it was killed: give it more events"
            consumer.send_signal(signal.SIGKILL)
        finally:
            consumer.wait(timeout=30)
            stderr.close()
        rows, distinct, done, leased = tally(factory)
        assert rows == distinct == done, f"round {round_no}: {rows} effects, {distinct} events, {done} done"
        caught_mid_batch += leased
    assert caught_mid_batch > 0  # some kills did leave claimed, unfinished events behind

    # A worker started after the last kill's leases ran out finishes the rest.
    last = ManualClock(T0 + timedelta(minutes=10 * KILL_ROUNDS))
    survivor = Dispatcher(
        factory,
        OutboxService(last),
        {TOPIC: lambda session, event: write_effect(session, event, "survivor")},
        worker="survivor",
    )
    survivor.drain()
    rows, distinct, done, leased = tally(factory)
    assert (rows, distinct, done, leased) == (600, 600, 600, 0)
    with factory() as session:
        handled = sorted(int(e) for e in session.scalars(text("SELECT event_id FROM effect")))
        dead = session.scalar(
            select(func.count()).select_from(OutboxEventRow).where(OutboxEventRow.status == EventStatus.DEAD)
        )
    assert handled == sorted(ids)
    assert dead == 0


def _consume(url: str, start: str, worker: str) -> None:
    """The killed consumer: handles events one at a time, slowly enough to be caught in the middle of a batch."""
    engine = make_engine(url)
    factory = make_session_factory(engine)

    def handle(session: Session, event: OutboxEvent) -> None:
        write_effect(session, event, worker)
        time.sleep(0.003)

    outbox = OutboxService(ManualClock(datetime.fromisoformat(start)))
    Dispatcher(factory, outbox, {TOPIC: handle}, worker=worker, batch_size=25, lease_s=LEASE_S).drain()


if __name__ == "__main__":
    _consume(*sys.argv[1:4])
