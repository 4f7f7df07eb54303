"""Notifications on real PostgreSQL, built by the migrations: concurrent enqueues of one episode store it once,
and concurrent workers send each message once to a real local webhook receiver that verifies signatures."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.notifications.channels import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookChannel, verify_webhook
from openami.notifications.interfaces import ChannelKind, DeliveryReport, PaymentReceived
from openami.notifications.models import NotificationEvent
from openami.notifications.service import NotificationService
from openami.registry.service import RegistryService
from openami.security.audit import AuditLog
from openami.security.meter_keys import MeterKeyCipher
from openami.storage import migrate
from openami.storage.db import make_engine, make_session_factory, unit_of_work
from tests.unit.notifications.receivers import http_receiver

pytestmark = pytest.mark.integration
SECRET = "whsec-0123456789abcdef"


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


def test_concurrent_enqueue_and_delivery_on_postgres(engine: Engine, meter_keys: MeterKeyCipher) -> None:
    clock = ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    registry = RegistryService(clock, meter_keys)
    factory: sessionmaker[Session] = make_session_factory(engine)
    with http_receiver() as receiver:
        service = NotificationService(
            clock, registry, AuditLog(clock), {ChannelKind.WEBHOOK: WebhookChannel(clock)}
        )
        with unit_of_work(factory) as s:
            site = registry.create_site(
                s, code="KSM", name="Kisumu", timezone="Africa/Nairobi", currency="KES", holiday_country="KE"
            )
            customer = registry.create_customer(s, site_id=site.id, reference="C-1", name="Wanjiru")
            accounts = [
                registry.create_account(
                    s, site_id=site.id, customer_id=customer.id, number=f"A{n}", kind="prepaid"
                )
                for n in range(10)
            ]
            for account in accounts:
                service.subscribe(
                    s, account.id, "webhook", receiver.url + "/hook", secret=SECRET, actor="ops", role="admin"
                )

        def enqueue_all() -> None:  # every payment reported by four threads at once
            for account in accounts:
                with unit_of_work(factory) as s:
                    service.enqueue(
                        s, PaymentReceived(account.id, 100_00, 100_00, "KES", f"pi_{account.id}", clock.now())
                    )

        threads = [threading.Thread(target=enqueue_all) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        reports: list[DeliveryReport] = []

        def work() -> None:
            reports.append(service.deliver_due(factory))

        workers = [threading.Thread(target=work) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    with factory() as s:
        assert s.scalar(select(func.count()).select_from(NotificationEvent)) == 10
    assert sum(r.sent for r in reports) == 10
    assert len(receiver.requests) == 10
    headers = [{k.lower(): v for k, v in r.headers.items()} for r in receiver.requests]
    keys = {h["idempotency-key"] for h in headers}
    assert len(keys) == 10
    for request, got in zip(receiver.requests, headers, strict=True):
        verify_webhook(
            SECRET, request.body, got[TIMESTAMP_HEADER.lower()], got[SIGNATURE_HEADER.lower()], clock.now()
        )
