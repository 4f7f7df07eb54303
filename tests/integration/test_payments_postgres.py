"""1,000 webhook deliveries for 200 payments, on real PostgreSQL, from 16 threads at once, with duplicates,
replays and reordering (refunds before their success, failures after it): every balance right to the minor unit,
the ledger balanced, each payment credited once. The scenario is bench.payments's; `make bench` prints its speed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from bench import payments as payments_bench
from sqlalchemy import Engine

from openami.security.meter_keys import MeterKeyCipher
from openami.storage import migrate
from openami.storage.db import make_engine

pytestmark = pytest.mark.integration

THREADS = 16


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url, pool_size=THREADS, max_overflow=4)
    yield engine
    engine.dispose()


def test_a_thousand_concurrent_deliveries(engine: Engine, meter_keys: MeterKeyCipher) -> None:
    """`make bench` measures this run; here it must come out right (bench.payments.run raises otherwise)."""
    figures = payments_bench.run(engine, meter_keys, deliveries=1_000, payments=200, threads=THREADS)

    assert figures.outcomes.get("refused", 0) == 0
    assert sum(figures.outcomes.values()) == 1_000
    assert figures.outcomes["applied"] >= 180 + 2 * 20  # every success, refund and chargeback applied once
