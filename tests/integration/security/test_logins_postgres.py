"""Sign-in failures on the real PostgreSQL: concurrent guesses at one name from one address take turns, every one
is counted until the lock, and none after it is even checked."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.security.identity import AuthRefusal, IdentityService
from openami.security.passwords import Argon2Cost
from openami.storage.db import make_session_factory

pytestmark = pytest.mark.integration
CHEAP = Argon2Cost(time_cost=1, memory_kib=8, parallelism=1)
PASSWORD = "correct horse battery 9"


@pytest.fixture
def factory(pg_engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(pg_engine)


def test_concurrent_guesses_all_count_and_lock(factory: sessionmaker[Session], clock: ManualClock) -> None:
    service = IdentityService(clock, CHEAP)
    with factory() as session, session.begin():
        service.create_user(session, "alice", "Alice", PASSWORD)
    start = threading.Barrier(8)
    errors: list[BaseException] = []
    outcomes: list[AuthRefusal | None] = []

    def guess() -> None:
        try:
            start.wait()
            with factory() as session, session.begin():
                result = service.authenticate(
                    session, "alice", "a wrong guess 123", None, clock.now(), "203.0.113.9"
                )
                outcomes.append(result.refusal)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guess) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with factory() as session:
        failures, locked_until = service.login_failures(session, "alice", "203.0.113.9")
    assert failures == 5  # the 5th failure locked it; the three after it were refused unchecked
    assert locked_until is not None
    assert sorted(outcomes) == sorted([AuthRefusal.INVALID_CREDENTIALS] * 5 + [AuthRefusal.LOCKED] * 3)
    with factory() as session, session.begin():
        refused = service.authenticate(session, "alice", PASSWORD, None, clock.now(), "203.0.113.9")
        assert refused.refusal is AuthRefusal.LOCKED
        assert service.authenticate(session, "alice", PASSWORD, None, clock.now(), "198.51.100.7").ok
