"""Notification tests run on a SQLite database built by the migrations, with one prepaid account in Nairobi
(UTC+3) and scripted channels that record what they are asked to send."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.notifications.interfaces import ChannelKind, DeliveryResult, OutgoingMessage, Recipient
from openami.notifications.rules import RetryPolicy
from openami.notifications.service import NotificationService
from openami.registry.interfaces import AccountInfo
from openami.registry.service import RegistryService
from openami.security.audit import AuditLog
from openami.security.meter_keys import MeterKeyCipher
from openami.storage import migrate
from openami.storage.db import make_engine, make_session_factory, unit_of_work


@dataclass
class ScriptedChannel:
    """Answers with `outcomes` in order (ok once they run out) and keeps every send."""

    kind: ChannelKind
    resend_safe: bool = False
    outcomes: list[DeliveryResult] = field(default_factory=list)
    sent: list[tuple[OutgoingMessage, Recipient]] = field(default_factory=list)

    def send(self, message: OutgoingMessage, recipient: Recipient) -> DeliveryResult:
        self.sent.append((message, recipient))
        return self.outcomes.pop(0) if self.outcomes else DeliveryResult.ok("ref")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))  # 12:00 in Nairobi


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    migrate.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def email() -> ScriptedChannel:
    return ScriptedChannel(ChannelKind.EMAIL)


@pytest.fixture
def webhook() -> ScriptedChannel:
    return ScriptedChannel(ChannelKind.WEBHOOK, resend_safe=True)


@pytest.fixture
def registry(clock: ManualClock, meter_keys: MeterKeyCipher) -> RegistryService:
    return RegistryService(clock, meter_keys)


@pytest.fixture
def service(
    clock: ManualClock, registry: RegistryService, email: ScriptedChannel, webhook: ScriptedChannel
) -> NotificationService:
    return NotificationService(
        clock,
        registry,
        AuditLog(clock),
        {ChannelKind.EMAIL: email, ChannelKind.WEBHOOK: webhook},
        retry=RetryPolicy(max_attempts=3),
    )


@pytest.fixture
def account(factory: sessionmaker[Session], registry: RegistryService) -> AccountInfo:
    with unit_of_work(factory) as session:
        site = registry.create_site(
            session,
            code="KSM",
            name="Kisumu",
            timezone="Africa/Nairobi",
            currency="KES",
            holiday_country="KE",
        )
        customer = registry.create_customer(session, site_id=site.id, reference="C-1", name="Wanjiru")
        return registry.create_account(
            session, site_id=site.id, customer_id=customer.id, number="A1", kind="prepaid"
        )
