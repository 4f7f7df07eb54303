"""Fixtures for head-end tests: a registered fleet in the per-test SQLite database."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.registry.interfaces import MeterInfo
from tests.unit.headend.helpers import register_fleet


@pytest.fixture
def fleet(session_factory: sessionmaker[Session], clock: ManualClock) -> dict[str, MeterInfo]:
    return register_fleet(session_factory, clock)
