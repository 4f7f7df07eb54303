"""Password hashing and a whole login (argon2id at the chosen cost), against the 300 ms the issue allows."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from openami.common.clock import SystemClock
from openami.security.identity import IdentityService
from openami.security.passwords import hash_password
from openami.storage.all_models import metadata
from openami.storage.db import make_engine, make_session_factory

PASSWORD = "correct horse battery staple 42"  # noqa: S105  (a benchmark user in a scratch database)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def hashing_and_login(runs: int) -> tuple[float, float, float]:
    """Median ms of hash_password, of a successful login, and of a wrong-password login."""
    hashes = []
    for _ in range(runs):
        t0 = time.perf_counter()
        hash_password(PASSWORD)
        hashes.append(time.perf_counter() - t0)
    clock = SystemClock()
    identity = IdentityService(clock)
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'logins.db'}")
        metadata.create_all(engine)
        factory = make_session_factory(engine)
        with factory() as session, session.begin():
            identity.create_user(session, "reader", "Meter reader", PASSWORD)
        good, bad = [], []
        for _ in range(runs):
            for password, samples in ((PASSWORD, good), ("not the password at all", bad)):
                with factory() as session, session.begin():
                    t0 = time.perf_counter()
                    identity.authenticate(session, "reader", password, None, clock.now())
                    samples.append(time.perf_counter() - t0)
            with factory() as session, session.begin():  # keep the wrong guesses from locking the account
                identity.authenticate(session, "reader", PASSWORD, None, clock.now())
        engine.dispose()
    return median_ms(hashes), median_ms(good), median_ms(bad)
