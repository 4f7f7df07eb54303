"""Control tests: a SQLite database built by the migrations up to relay control, a Kenyan site with two customer
meters (one on an account) and a clock on a Tuesday morning in Nairobi, when disconnects are allowed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.common.errors import OpenAMIError
from openami.control.service import ControlService
from openami.headend.codec import Command
from openami.registry.interfaces import AccountInfo, MeterInfo, SiteInfo
from openami.registry.service import RegistryService
from openami.security.meter_keys import MeterKeyCipher
from openami.storage import migrate
from openami.storage.db import make_engine, make_session_factory

CONTROL_REVISION = "0015"  # relay control (0009) with the load-limit command (0015)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 3, 3, 7, 0, tzinfo=UTC))  # Tuesday 10:00 in Nairobi


@pytest.fixture
def control_engine(sqlite_url: str) -> Iterator[Engine]:
    migrate.upgrade(sqlite_url, CONTROL_REVISION)
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def factory(control_engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(control_engine)


@pytest.fixture
def registry(clock: ManualClock, meter_keys: MeterKeyCipher) -> RegistryService:
    return RegistryService(clock, meter_keys)


@pytest.fixture
def control(clock: ManualClock, registry: RegistryService) -> ControlService:
    return ControlService(clock, registry)


@dataclass(frozen=True)
class World:
    site: SiteInfo
    account: AccountInfo
    home: MeterInfo  # on `account`
    other: MeterInfo  # no account


def build_world(
    factory: sessionmaker[Session],
    registry: RegistryService,
    *,
    serials: tuple[str, str] = ("KE0001", "KE0002"),
    keys: tuple[bytes, bytes] = (bytes(range(32)), bytes(range(1, 33))),
    code: str = "ke",
) -> World:
    with factory() as session, session.begin():
        site = registry.create_site(
            session, code=code, name="Kenya", timezone="Africa/Nairobi", currency="KES", holiday_country="KE"
        )
        customer = registry.create_customer(session, site_id=site.id, reference="C1", name="Wanjiru")
        account = registry.create_account(
            session, site_id=site.id, customer_id=customer.id, number="A1", kind="prepaid"
        )
        point = registry.create_service_point(
            session, site_id=site.id, code="SP1", rated_current_a=40, account_id=account.id
        )
        home = registry.create_meter(
            session,
            site_id=site.id,
            serial=serials[0],
            model="sim",
            rated_current_a=60,
            auth_key=keys[0],
            service_point_id=point.id,
        )
        other = registry.create_meter(
            session, site_id=site.id, serial=serials[1], model="sim", rated_current_a=60, auth_key=keys[1]
        )
        return World(site, account, home, other)


@pytest.fixture
def world(factory: sessionmaker[Session], registry: RegistryService) -> World:
    return build_world(factory, registry)


@dataclass
class FakeSender:
    """Records what it is asked to send; `failing` serials raise like a transport that is down."""

    sent: list[tuple[str, Command]] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)

    def send_command(self, serial: str, command: Command) -> object:
        if serial in self.failing:
            raise OpenAMIError(f"transport down for {serial}")
        self.sent.append((serial, command))
        return None


@pytest.fixture
def sender() -> FakeSender:
    return FakeSender()
