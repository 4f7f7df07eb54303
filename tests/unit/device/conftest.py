"""Fixtures for the device tests."""

from __future__ import annotations

import pytest

from openami.device import Meter, MeterConfig
from tests.unit.device.support import MONDAY


@pytest.fixture
def meter() -> Meter:
    """A meter with the default configuration, commissioned on a Monday at midnight UTC."""
    return Meter(MeterConfig("DEV-0001"), MONDAY)
