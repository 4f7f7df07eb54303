"""The one composition root: API, CLI, workers and tests build the system here.

Tests pass fakes (a ManualClock, a test database URL) in rather than patching internals.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import Clock, SystemClock
from openami.config import Settings
from openami.storage.db import make_engine, make_session_factory


@dataclass
class Container:
    settings: Settings
    clock: Clock
    engine: Engine
    session_factory: sessionmaker[Session]

    def close(self) -> None:
        self.engine.dispose()


def bootstrap(
    settings: Settings | None = None, clock: Clock | None = None, engine: Engine | None = None
) -> Container:
    settings = settings or Settings()
    clock = clock or SystemClock()
    engine = engine or make_engine(settings.database_url)
    return Container(
        settings=settings, clock=clock, engine=engine, session_factory=make_session_factory(engine)
    )
