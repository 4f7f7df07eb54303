"""Sign-in failures on the real PostgreSQL: concurrent guesses at one name from one address all count."""

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

    def guess() -> None:
        try:
            start.wait()
            with factory() as session, session.begin():
                service.authenticate(session, "alice", "a wrong guess 123", None, clock.now(), "203.0.113.9")
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
    assert failures == 8
    assert locked_until is not None  # the 5th failure locked it
    with factory() as session, session.begin():
        refused = service.authenticate(session, "alice", PASSWORD, None, clock.now(), "203.0.113.9")
        assert refused.refusal is AuthRefusal.LOCKED
        assert service.authenticate(session, "alice", PASSWORD, None, clock.now(), "198.51.100.7").ok
