"""On PostgreSQL one collection round runs at a time, whichever worker starts it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from openami.bootstrap import bootstrap
from openami.config import Settings
from openami.headend.collection import _ROUND_LOCK_KEY
from openami.headend.inprocess import InProcessTransport


@pytest.mark.integration
def test_a_round_is_skipped_while_another_worker_holds_it(pg_engine: Engine, pg_url: str) -> None:
    container = bootstrap(Settings(database_url=pg_url), engine=pg_engine)
    silent_meters = InProcessTransport(background=False, on_command=lambda _serial, _frame: [])
    jobs = container.collection_jobs(container.headend(silent_meters))
    now = datetime(2026, 3, 2, tzinfo=UTC)
    with container.session_factory() as session, session.begin():
        site = container.registry.create_site(
            session, code="s1", name="s1", timezone="UTC", currency="EUR", holiday_country="DE"
        )
        container.registry.create_meter(
            session,
            site_id=site.id,
            serial="M-1",
            model="m",
            rated_current_a=60,
            auth_key=bytes(32),
            installed_at=now - timedelta(days=1),
        )  # it never sent anything: a round finds a gap
    with pg_engine.connect() as other_worker:
        assert other_worker.execute(
            text("SELECT pg_try_advisory_lock(:k)"), {"k": _ROUND_LOCK_KEY}
        ).scalar_one()
        skipped = jobs.run_once(now)
        other_worker.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _ROUND_LOCK_KEY})
        other_worker.commit()
    assert (skipped.gaps_found, skipped.rereads_requested, skipped.intervals_estimated) == (0, 0, 0)
    # Free again: the round runs, finds the silent meter's gap, and releases the lock.
    assert jobs.run_once(now).gaps_found == 1
    with pg_engine.connect() as probe:
        assert probe.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _ROUND_LOCK_KEY}).scalar_one()
        probe.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _ROUND_LOCK_KEY})
