"""The outbox on a SQLite database built by the migrations: emitting in the caller's transaction, deduplication,
claims and leases, completion, retries with backoff, dead events, inspection, and the dispatcher."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.common.errors import ConflictError, NotFoundError, ValidationError
from openami.outbox.dispatcher import Dispatcher, DispatchReport, Outcome
from openami.outbox.interfaces import EventState, EventStatus, OutboxEvent, TopicCount
from openami.outbox.models import OutboxEventRow
from openami.outbox.retry import RetryPolicy
from openami.outbox.service import OutboxService
from openami.registry.service import RegistryService
from openami.security.meter_keys import MeterKeyCipher
from openami.storage import migrate
from openami.storage.db import make_engine, make_session_factory, unit_of_work

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=3, base_s=10.0, cap_s=1000.0, jitter=0.5)
LEASE_S = 60.0


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    migrate.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:  # what handlers write in these tests: no unique key, so doubles would show
        conn.execute(text("CREATE TABLE effect (event_id INTEGER NOT NULL, worker TEXT NOT NULL)"))
    yield engine
    engine.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def db(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as session:
        yield session


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def outbox(clock: ManualClock) -> OutboxService:
    return OutboxService(clock, policy=POLICY, rng=random.Random(7))


def emit(
    session: Session, outbox: OutboxService, key: str, topic: str = "payment.received", **kw: Any
) -> int:
    event_id = outbox.emit(session, topic=topic, key=key, payload={"key": key}, **kw)
    assert event_id is not None
    return event_id


def effects(session: Session) -> list[tuple[int, str]]:
    return [(int(r[0]), str(r[1])) for r in session.execute(text("SELECT event_id, worker FROM effect"))]


def write_effect(session: Session, event: OutboxEvent, worker: str = "handler") -> None:
    session.execute(text("INSERT INTO effect VALUES (:e, :w)"), {"e": event.id, "w": worker})


# -- emitting --------------------------------------------------------------------------------------------------


def test_an_event_emitted_in_a_rolled_back_transaction_does_not_exist(
    factory: sessionmaker[Session], outbox: OutboxService
) -> None:
    with factory() as session:
        emit(session, outbox, "k1")
        session.rollback()
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(OutboxEventRow)) == 0
        assert outbox.claim(session, topics=["payment.received"], worker="w", limit=10, lease_s=LEASE_S) == []


def test_emit_stores_a_pending_event_due_now(
    db: Session, outbox: OutboxService, meter_keys: MeterKeyCipher
) -> None:
    registry = RegistryService(ManualClock(T0), meter_keys)
    site = registry.create_site(
        db, code="KSM", name="Kisumu", timezone="Africa/Nairobi", currency="KES", holiday_country="KE"
    )
    event_id = outbox.emit(
        db, topic="notification.send", key="n-1", payload={"to": "a@b.c", "n": [1, 2]}, site_id=site.id
    )
    assert event_id is not None
    db.commit()
    event = outbox.get(db, event_id)
    assert (event.topic, event.key, event.payload, event.site_id) == (
        "notification.send",
        "n-1",
        {"to": "a@b.c", "n": [1, 2]},
        site.id,
    )
    assert (event.status, event.attempts, event.created_at, event.available_at) == (
        EventStatus.PENDING,
        0,
        T0,
        T0,
    )
    assert event.locked_by is None
    assert event.done_at is None
    assert event.dead_at is None
    assert event.idempotency_key == f"openami-outbox-{event_id}"


def test_emitting_a_key_twice_keeps_the_first_and_reports_the_second(
    factory: sessionmaker[Session], outbox: OutboxService
) -> None:
    with unit_of_work(factory) as session:
        first = outbox.emit(session, topic="payment.received", key="pay-1", payload={"amount_minor": 100})
        assert first is not None
        # Within the same transaction too.
        assert (
            outbox.emit(session, topic="payment.received", key="pay-1", payload={"amount_minor": 999}) is None
        )
    with unit_of_work(factory) as session:
        assert (
            outbox.emit(session, topic="payment.received", key="pay-1", payload={"amount_minor": 5}) is None
        )
        other_topic = outbox.emit(session, topic="notification.send", key="pay-1", payload={})
        assert other_topic is not None
        assert other_topic != first
    with factory() as session:
        assert outbox.get(session, first).payload == {"amount_minor": 100}
        assert session.scalar(select(func.count()).select_from(OutboxEventRow)) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"topic": "payment"}, "dotted lower-case"),
        ({"topic": "Payment.received"}, "dotted lower-case"),
        ({"topic": "payment..received"}, "dotted lower-case"),
        ({"topic": "payment.received" + ".x" * 50}, "at most 100"),
        ({"key": ""}, "1 to 200 characters"),
        ({"key": "k" * 201}, "1 to 200 characters"),
        ({"payload": ["not", "an", "object"]}, "must be a JSON object"),
        ({"payload": {"amount": {1, 2}}}, "no JSON form"),
        ({"payload": {"ratio": float("nan")}}, "no JSON form"),
        ({"payload": {"pair": (1, 2)}}, "would not read back"),
        ({"payload": {1: "int key"}}, "would not read back"),
        ({"available_at": datetime(2026, 3, 2, 1, 0)}, "timezone-aware"),  # noqa: DTZ001  (naive on purpose)
    ],
)
def test_emit_refuses_what_it_cannot_store_faithfully(
    db: Session, outbox: OutboxService, kwargs: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {"topic": "payment.received", "key": "k", "payload": {}} | kwargs
    with pytest.raises(ValidationError, match=message) as caught:
        outbox.emit(db, **arguments)
    assert caught.value.location is not None
    assert caught.value.location.startswith("outbox.emit(")
    assert db.scalar(select(func.count()).select_from(OutboxEventRow)) == 0


# -- claiming, completing, failing -----------------------------------------------------------------------------


def test_claim_leases_due_events_of_its_topics_oldest_first(
    db: Session, outbox: OutboxService, clock: ManualClock
) -> None:
    later = emit(db, outbox, "later", available_at=T0 + timedelta(minutes=5))
    second = emit(db, outbox, "second", available_at=T0 - timedelta(seconds=1))
    first = emit(db, outbox, "first", available_at=T0 - timedelta(seconds=2))
    emit(db, outbox, "other", topic="relay.command")
    db.commit()

    claimed = outbox.claim(db, topics=["payment.received"], worker="w1", limit=10, lease_s=600)
    db.commit()
    assert [e.id for e in claimed] == [first, second]
    assert all(e.locked_by == "w1" and e.locked_until == T0 + timedelta(minutes=10) for e in claimed)
    assert all(e.attempts == 1 and e.status is EventStatus.PENDING for e in claimed)

    clock.advance(timedelta(minutes=5))  # the delayed one is due; the first two are still leased
    assert [
        e.id for e in outbox.claim(db, topics=["payment.received"], worker="w2", limit=10, lease_s=600)
    ] == [later]


def test_a_second_worker_takes_the_next_events_not_the_leased_ones(
    db: Session, outbox: OutboxService
) -> None:
    ids = [emit(db, outbox, f"k{i}") for i in range(5)]
    db.commit()
    a = outbox.claim(db, topics=["payment.received"], worker="a", limit=2, lease_s=LEASE_S)
    b = outbox.claim(db, topics=["payment.received"], worker="b", limit=10, lease_s=LEASE_S)
    c = outbox.claim(db, topics=["payment.received"], worker="c", limit=10, lease_s=LEASE_S)
    assert [e.id for e in a] == ids[:2]
    assert [e.id for e in b] == ids[2:]
    assert c == []


def test_complete_marks_the_event_done_for_its_holder_only(db: Session, outbox: OutboxService) -> None:
    event_id = emit(db, outbox, "k")
    outbox.claim(db, topics=["payment.received"], worker="a", limit=1, lease_s=LEASE_S)
    with pytest.raises(
        ConflictError, match=r"worker 'b' cannot complete it: it is pending and leased by 'a'"
    ):
        outbox.complete(db, event_id, "b")
    outbox.complete(db, event_id, "a")
    db.commit()
    event = outbox.get(db, event_id)
    assert (event.status, event.done_at, event.locked_by, event.locked_until) == (
        EventStatus.DONE,
        T0,
        None,
        None,
    )
    with pytest.raises(ConflictError, match="it is done and not leased"):
        outbox.complete(db, event_id, "a")
    with pytest.raises(NotFoundError, match="outbox event 999 does not exist"):
        outbox.complete(db, 999, "a")
    assert outbox.claim(db, topics=["payment.received"], worker="a", limit=1, lease_s=LEASE_S) == []


def test_an_expired_lease_lets_another_worker_claim_and_shuts_the_first_out(
    db: Session, outbox: OutboxService, clock: ManualClock
) -> None:
    event_id = emit(db, outbox, "k")
    outbox.claim(db, topics=["payment.received"], worker="crashed", limit=1, lease_s=LEASE_S)
    db.commit()
    clock.advance(timedelta(seconds=LEASE_S - 1))
    assert outbox.claim(db, topics=["payment.received"], worker="b", limit=1, lease_s=LEASE_S) == []
    clock.advance(timedelta(seconds=1))
    (again,) = outbox.claim(db, topics=["payment.received"], worker="b", limit=1, lease_s=LEASE_S)
    assert (again.id, again.attempts, again.locked_by) == (event_id, 2, "b")
    with pytest.raises(ConflictError, match="leased by 'b'"):
        outbox.complete(db, event_id, "crashed")
    with pytest.raises(ConflictError, match="leased by 'b'"):
        outbox.fail(db, event_id, "crashed", "late")
    outbox.complete(db, event_id, "b")
    assert outbox.get(db, event_id).status is EventStatus.DONE


def test_fail_schedules_the_next_attempt_after_a_jittered_exponential_backoff(
    db: Session, outbox: OutboxService, clock: ManualClock
) -> None:
    event_id = emit(db, outbox, "k")
    expected = random.Random(7)  # the same seed as the service's: the same jitter draws
    for attempt in (1, 2):
        (event,) = outbox.claim(db, topics=["payment.received"], worker="w", limit=1, lease_s=LEASE_S)
        assert event.attempts == attempt
        failed = outbox.fail(db, event_id, "w", f"boom {attempt}")
        delay = POLICY.delay(attempt, expected)
        ceiling = timedelta(seconds=10 * 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
        assert failed.available_at == clock.now() + delay
        assert (failed.status, failed.last_error, failed.locked_by, failed.locked_until) == (
            EventStatus.PENDING,
            f"boom {attempt}",
            None,
            None,
        )
        clock.set(failed.available_at - timedelta(microseconds=1))
        assert outbox.claim(db, topics=["payment.received"], worker="w", limit=1, lease_s=LEASE_S) == []
        clock.set(failed.available_at)


def test_after_its_last_attempt_an_event_is_dead_and_stays_visible(
    db: Session, outbox: OutboxService, clock: ManualClock
) -> None:
    event_id = emit(db, outbox, "k")
    emit(db, outbox, "fine")
    failed = None
    for attempt in range(1, POLICY.max_attempts + 1):
        claimed = outbox.claim(db, topics=["payment.received"], worker="w", limit=10, lease_s=LEASE_S)
        for event in claimed:
            if event.id == event_id:
                failed = outbox.fail(db, event_id, "w", f"refused, attempt {attempt}")
            else:
                outbox.complete(db, event.id, "w")
        clock.advance(timedelta(hours=2))
    assert failed is not None
    assert failed.status is EventStatus.DEAD
    assert (failed.attempts, failed.dead_at, failed.last_error) == (
        3,
        clock.now() - timedelta(hours=2),
        "refused, attempt 3",
    )
    clock.advance(timedelta(days=30))
    assert outbox.claim(db, topics=["payment.received"], worker="w", limit=10, lease_s=LEASE_S) == []
    assert [e.id for e in outbox.dead_events(db)] == [event_id]
    assert outbox.dead_events(db, topic="relay.command") == []
    assert outbox.counts(db) == [
        TopicCount("payment.received", EventState.DONE, 1),
        TopicCount("payment.received", EventState.DEAD, 1),
    ]


def test_an_event_whose_worker_dies_on_every_attempt_ends_dead_at_the_next_claim(
    db: Session, outbox: OutboxService, clock: ManualClock
) -> None:
    event_id = emit(db, outbox, "poison")
    for attempt in range(1, POLICY.max_attempts + 1):
        (event,) = outbox.claim(
            db, topics=["payment.received"], worker=f"w{attempt}", limit=1, lease_s=LEASE_S
        )
        assert event.attempts == attempt
        clock.advance(timedelta(seconds=LEASE_S))  # the worker is killed: no complete, no fail
    assert outbox.claim(db, topics=["payment.received"], worker="w9", limit=1, lease_s=LEASE_S) == []
    dead = outbox.get(db, event_id)
    assert (dead.status, dead.attempts, dead.locked_by) == (EventStatus.DEAD, POLICY.max_attempts, None)
    assert dead.last_error is not None
    assert dead.last_error.startswith("abandoned: the lease of attempt 3 of 3")


def test_a_topic_can_have_its_own_retry_policy(db: Session, clock: ManualClock) -> None:
    outbox = OutboxService(
        clock, policy=POLICY, topic_policies={"relay.command": RetryPolicy(max_attempts=1)}
    )
    relay = emit(db, outbox, "r", topic="relay.command")
    payment = emit(db, outbox, "p")
    for event in outbox.claim(
        db, topics=["relay.command", "payment.received"], worker="w", limit=5, lease_s=1
    ):
        outbox.fail(db, event.id, "w", "no answer")
    assert outbox.get(db, relay).status is EventStatus.DEAD
    assert outbox.get(db, payment).status is EventStatus.PENDING


def test_release_gives_unhandled_events_back_without_counting_the_attempt(
    db: Session, outbox: OutboxService
) -> None:
    ids = [emit(db, outbox, f"k{i}") for i in range(3)]
    outbox.claim(db, topics=["payment.received"], worker="w", limit=3, lease_s=LEASE_S)
    assert outbox.release(db, ids[1:], "someone else") == 0
    assert outbox.release(db, ids[1:], "w") == 2
    assert [outbox.get(db, i).attempts for i in ids] == [1, 0, 0]
    assert [
        e.id for e in outbox.claim(db, topics=["payment.received"], worker="v", limit=9, lease_s=1)
    ] == ids[1:]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"worker": ""}, "worker name"),
        ({"limit": 0}, "limit must be at least 1"),
        ({"lease_s": 0}, "lease_s must be positive"),
    ],
)
def test_claim_refuses_bad_arguments(
    db: Session, outbox: OutboxService, kwargs: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {
        "topics": ["payment.received"],
        "worker": "w",
        "limit": 1,
        "lease_s": 1,
    } | kwargs
    with pytest.raises(ValidationError, match=message):
        outbox.claim(db, **arguments)


# -- inspecting and operating ----------------------------------------------------------------------------------


def test_counts_by_topic_and_state_optionally_for_one_site(
    db: Session, outbox: OutboxService, clock: ManualClock, meter_keys: MeterKeyCipher
) -> None:
    registry = RegistryService(clock, meter_keys)
    site = registry.create_site(
        db, code="KSM", name="Kisumu", timezone="Africa/Nairobi", currency="KES", holiday_country="KE"
    )
    for i in range(4):
        emit(db, outbox, f"p{i}", site_id=site.id)
    emit(db, outbox, "n0", topic="notification.send")
    (done, in_flight) = outbox.claim(db, topics=["payment.received"], worker="w", limit=2, lease_s=LEASE_S)
    outbox.complete(db, done.id, "w")
    assert outbox.counts(db) == [
        TopicCount("notification.send", EventState.PENDING, 1),
        TopicCount("payment.received", EventState.PENDING, 2),
        TopicCount("payment.received", EventState.IN_FLIGHT, 1),
        TopicCount("payment.received", EventState.DONE, 1),
    ]
    clock.advance(timedelta(seconds=LEASE_S))  # the lease ran out: pending again
    assert outbox.counts(db, site_id=site.id) == [
        TopicCount("payment.received", EventState.PENDING, 3),
        TopicCount("payment.received", EventState.DONE, 1),
    ]
    assert in_flight.id not in {e.id for e in outbox.dead_events(db)}


def test_a_requeued_dead_event_gets_fresh_attempts(db: Session, clock: ManualClock) -> None:
    outbox = OutboxService(clock, policy=RetryPolicy(max_attempts=1))
    event_id = emit(db, outbox, "k")
    outbox.claim(db, topics=["payment.received"], worker="w", limit=1, lease_s=LEASE_S)
    outbox.fail(db, event_id, "w", "provider down")
    clock.advance(timedelta(hours=1))
    revived = outbox.requeue_dead(db, event_id)
    assert (revived.status, revived.attempts, revived.available_at, revived.dead_at) == (
        EventStatus.PENDING,
        0,
        clock.now(),
        None,
    )
    assert revived.last_error == "provider down"
    with pytest.raises(ConflictError, match="is pending, not dead"):
        outbox.requeue_dead(db, event_id)
    (again,) = outbox.claim(db, topics=["payment.received"], worker="w", limit=1, lease_s=LEASE_S)
    assert again.attempts == 1


def test_purge_done_deletes_old_done_events_only(
    db: Session, outbox: OutboxService, clock: ManualClock
) -> None:
    old, pending = emit(db, outbox, "old"), emit(db, outbox, "pending", available_at=T0 + timedelta(days=9))
    outbox.claim(db, topics=["payment.received"], worker="w", limit=1, lease_s=LEASE_S)
    outbox.complete(db, old, "w")
    clock.advance(timedelta(days=8))
    recent = emit(db, outbox, "recent")
    outbox.claim(db, topics=["payment.received"], worker="w", limit=1, lease_s=LEASE_S)
    outbox.complete(db, recent, "w")
    assert outbox.purge_done(db, done_before=T0 + timedelta(days=7)) == 1
    with pytest.raises(NotFoundError):
        outbox.get(db, old)
    assert outbox.get(db, recent).status is EventStatus.DONE
    assert outbox.get(db, pending).status is EventStatus.PENDING
    assert outbox.emit(db, topic="payment.received", key="old", payload={}) is not None  # purged: new again


# -- the retry policy ------------------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_and_jitter_only_shortens_it() -> None:
    policy = RetryPolicy(max_attempts=20, base_s=2.0, cap_s=100.0, jitter=0.25)
    rng = random.Random(1)
    for attempt in range(1, 20):
        ceiling = min(100.0, 2.0 * 2 ** (attempt - 1))
        for _ in range(50):
            delay = policy.delay(attempt, rng).total_seconds()
            assert ceiling * 0.75 <= delay <= ceiling
    steady = RetryPolicy(base_s=3.0, cap_s=50.0, jitter=0.0)
    assert [steady.delay(n, rng).total_seconds() for n in (1, 2, 3, 4, 5, 100)] == [3, 6, 12, 24, 48, 50]
    assert [POLICY.delay(n, random.Random(5)) for n in range(1, 8)] == [
        POLICY.delay(n, random.Random(5)) for n in range(1, 8)
    ]
    assert not POLICY.gives_up_after(2)
    assert POLICY.gives_up_after(3)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"base_s": 0}, {"base_s": 10, "cap_s": 5}, {"jitter": -0.1}, {"jitter": 1.5}],
)
def test_retry_policy_refuses_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**kwargs)


def test_delay_counts_attempts_from_one() -> None:
    with pytest.raises(ValueError, match="counted from 1"):
        POLICY.delay(0, random.Random(0))


# -- the dispatcher --------------------------------------------------------------------------------------------


def test_the_dispatcher_commits_each_handlers_writes_with_its_completion(
    factory: sessionmaker[Session], outbox: OutboxService
) -> None:
    seen: list[OutboxEvent] = []

    def record(session: Session, event: OutboxEvent) -> None:
        seen.append(event)
        write_effect(session, event)

    with unit_of_work(factory) as session:
        ids = [emit(session, outbox, f"k{i}") for i in range(7)]
        emit(session, outbox, "no handler", topic="relay.command")
    dispatcher = Dispatcher(factory, outbox, {"payment.received": record}, worker="w", batch_size=3)
    assert dispatcher.run_once() == DispatchReport(claimed=3, completed=3)
    assert dispatcher.drain() == DispatchReport(claimed=4, completed=4)
    with factory() as session:
        assert sorted(e for e, _ in effects(session)) == ids
        assert all(outbox.get(session, i).status is EventStatus.DONE for i in ids)
        assert outbox.counts(session) == [
            TopicCount("payment.received", EventState.DONE, 7),
            TopicCount("relay.command", EventState.PENDING, 1),
        ]
    assert [e.payload for e in seen] == [{"key": f"k{i}"} for i in range(7)]
    assert all(e.locked_by == "w" for e in seen)


def test_a_failing_handler_leaves_no_writes_and_is_retried_after_backoff(
    factory: sessionmaker[Session], outbox: OutboxService, clock: ManualClock
) -> None:
    calls: list[int] = []

    def flaky(session: Session, event: OutboxEvent) -> None:
        calls.append(event.attempts)
        write_effect(session, event)
        if event.attempts == 1:
            raise RuntimeError("provider timed out")

    with unit_of_work(factory) as session:
        event_id = emit(session, outbox, "k")
    dispatcher = Dispatcher(factory, outbox, {"payment.received": flaky}, worker="w")
    assert dispatcher.drain() == DispatchReport(claimed=1, retried=1)
    with factory() as session:
        assert effects(session) == []
        event = outbox.get(session, event_id)
        assert (event.status, event.last_error) == (EventStatus.PENDING, "RuntimeError: provider timed out")
    clock.set(event.available_at)
    assert dispatcher.run_once() == DispatchReport(claimed=1, completed=1)
    with factory() as session:
        assert effects(session) == [(event_id, "handler")]
    assert calls == [1, 2]


def test_a_handler_that_always_fails_ends_dead(
    factory: sessionmaker[Session], outbox: OutboxService, clock: ManualClock
) -> None:
    def broken(session: Session, event: OutboxEvent) -> None:
        raise ValueError(f"no template for event {event.id}")

    with unit_of_work(factory) as session:
        event_id = emit(session, outbox, "k", topic="notification.send")
    dispatcher = Dispatcher(factory, outbox, {"notification.send": broken}, worker="w")
    reports = []
    for _ in range(POLICY.max_attempts):
        reports.append(dispatcher.run_once())
        clock.advance(timedelta(hours=1))
    assert [r.retried for r in reports] == [1, 1, 0]
    assert reports[-1].dead == 1
    with factory() as session:
        (dead,) = outbox.dead_events(session)
    assert (dead.id, dead.last_error) == (event_id, f"ValueError: no template for event {event_id}")


def test_a_dispatcher_whose_lease_was_taken_over_does_not_run_the_handler(
    factory: sessionmaker[Session], outbox: OutboxService, clock: ManualClock
) -> None:
    ran: list[int] = []
    dispatcher = Dispatcher(
        factory, outbox, {"payment.received": lambda s, e: ran.append(e.id)}, worker="slow"
    )
    with unit_of_work(factory) as session:
        emit(session, outbox, "k")
    with unit_of_work(factory) as session:
        (mine,) = outbox.claim(session, topics=["payment.received"], worker="slow", limit=1, lease_s=LEASE_S)
    clock.advance(timedelta(seconds=LEASE_S))
    with unit_of_work(factory) as session:
        outbox.claim(session, topics=["payment.received"], worker="fast", limit=1, lease_s=LEASE_S)
    assert dispatcher.process(mine) is Outcome.LOST
    assert ran == []
    with factory() as session:
        assert outbox.get(session, mine.id).locked_by == "fast"


def test_stopping_mid_batch_releases_the_rest(factory: sessionmaker[Session], outbox: OutboxService) -> None:
    stop = threading.Event()

    def first_then_stop(session: Session, event: OutboxEvent) -> None:
        write_effect(session, event)
        stop.set()

    with unit_of_work(factory) as session:
        ids = [emit(session, outbox, f"k{i}") for i in range(4)]
    dispatcher = Dispatcher(factory, outbox, {"payment.received": first_then_stop}, worker="w", batch_size=10)
    assert dispatcher.run_once(stop) == DispatchReport(claimed=4, completed=1, released=3)
    with factory() as session:
        rest = [outbox.get(session, i) for i in ids[1:]]
    assert all(e.status is EventStatus.PENDING and e.locked_by is None and e.attempts == 0 for e in rest)


def test_run_forever_handles_events_as_they_come_until_stopped(
    factory: sessionmaker[Session], outbox: OutboxService
) -> None:
    handled = threading.Semaphore(0)

    def count(session: Session, event: OutboxEvent) -> None:
        write_effect(session, event)
        handled.release()

    stop = threading.Event()
    dispatcher = Dispatcher(factory, outbox, {"payment.received": count}, worker="w", idle_wait_s=0.01)
    thread = threading.Thread(target=dispatcher.run_forever, args=(stop,))
    thread.start()
    try:
        for i in range(5):
            with unit_of_work(factory) as session:
                emit(session, outbox, f"k{i}")
        for _ in range(5):
            assert handled.acquire(timeout=10)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    with factory() as session:
        assert len(effects(session)) == 5


def test_a_dispatcher_needs_handlers_and_sane_settings(
    factory: sessionmaker[Session], outbox: OutboxService
) -> None:
    with pytest.raises(ValidationError, match="at least one handler"):
        Dispatcher(factory, outbox, {})
    with pytest.raises(ValidationError, match="batch_size >= 1"):
        Dispatcher(factory, outbox, {"payment.received": lambda s, e: None}, batch_size=0)
    assert (
        Dispatcher(factory, outbox, {"payment.received": lambda s, e: None}).worker
        != Dispatcher(factory, outbox, {"payment.received": lambda s, e: None}).worker
    )
