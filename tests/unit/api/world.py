"""Two tenants for authorisation tests: sites A and B, each with a customer (A1, B1), account, transformer, service point and
meter with a day of readings; site A has a second customer (A2) on its own account and meter.

Every name a tenant's objects carry is unique to it ("...-A-...", "...-B-..."), so a response can be searched for
another tenant's data by text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from openami.billing.service import BillingService
from openami.bootstrap import Container
from openami.common.obis import ACTIVE_IMPORT_INTERVAL
from openami.ledger.service import LedgerService
from openami.readings.interfaces import IntervalValue, MeterBatch, Source

T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)


@dataclass
class Tenant:
    tag: str
    site_id: int
    site_code: str
    customer_id: int
    account_id: int
    account_number: str
    transformer_id: int
    service_point_id: int
    serial: str
    markers: list[str] = field(default_factory=list)  # text that only this tenant's data contains
    bill_id: int = 0  # the tenant's bill for 1 March
    payment_id: int = 0  # the tenant's checkout in the sandbox
    command_id: int = 0  # a reconnect queued for the tenant's meter
    bulk_id: int = 0  # a bulk read-now of the tenant's meter
    protection_id: int = 0  # a supply protection of the tenant's account
    emergency_id: int = 0  # a weather emergency declared at the tenant's site
    subscription_id: int = 0  # a webhook the tenant's alerts go to

    def values(self, **extra: object) -> dict[str, object]:
        """Path parameter values naming this tenant's objects."""
        return {
            "site_id": self.site_id,
            "site_code": self.site_code,
            "customer_id": self.customer_id,
            "account_id": self.account_id,
            "account_number": self.account_number,
            "transformer_id": self.transformer_id,
            "service_point_id": self.service_point_id,
            "serial": self.serial,
            "interval_start": "2026-03-01T06:00:00Z",
            "bill_id": self.bill_id,
            "payment_id": self.payment_id,
            "command_id": self.command_id,
            "bulk_id": self.bulk_id,
            "protection_id": self.protection_id,
            "emergency_id": self.emergency_id,
            "subscription_id": self.subscription_id,
            "provider": "sandbox",
            "token": "not-a-signed-checkout",
            "outcome": "failed",
            **extra,
        }


def _tenant(
    container: Container, session: Session, site_id: int, site_code: str, tag: str, zone: str
) -> Tenant:
    registry = container.registry
    customer = registry.create_customer(
        session, site_id=site_id, reference=f"CUST-{tag}", name=f"Customer {tag} Secretname"
    )
    account = registry.create_account(
        session, site_id=site_id, customer_id=customer.id, number=f"ACC-{tag}", kind="postpaid"
    )
    transformer = registry.create_transformer(session, site_id=site_id, code=f"TX-{tag}", rating_kva=100)
    point = registry.create_service_point(
        session,
        site_id=site_id,
        code=f"SP-{tag}",
        rated_current_a=60,
        account_id=account.id,
        transformer_id=transformer.id,
        address=f"Plot {tag} Lakeside",
    )
    meter = registry.create_meter(
        session,
        site_id=site_id,
        serial=f"MTR-{tag}-0001",
        model="OA-1P",
        rated_current_a=60,
        auth_key=bytes(range(32)),
        service_point_id=point.id,
        installed_at=T0 - timedelta(days=30),
    )
    first = datetime(2026, 3, 1, tzinfo=ZoneInfo(zone)).astimezone(UTC)  # the site's 1 March, local
    readings = [
        IntervalValue(ACTIVE_IMPORT_INTERVAL, first + timedelta(minutes=15 * k), 900, 77 + k)
        for k in range(96)
    ]
    container.readings.ingest(
        session,
        [MeterBatch(meter.id, T0 + timedelta(days=1), Source.PUSH, intervals=readings)],
    )
    return Tenant(
        tag=tag,
        site_id=site_id,
        site_code=site_code,
        customer_id=customer.id,
        account_id=account.id,
        account_number=f"ACC-{tag}",
        transformer_id=transformer.id,
        service_point_id=point.id,
        serial=f"MTR-{tag}-0001",
        markers=[
            f"MTR-{tag}-0001",
            f"CUST-{tag}",
            f"Customer {tag} Secretname",
            f"ACC-{tag}",
            f"TX-{tag}",
            f"SP-{tag}",
        ],
    )


def _control_and_alerts(container: Container, session: Session, tenant: Tenant, *, meter_id: int) -> None:
    """A relay command, a bulk operation, a protection, an emergency and a webhook of `tenant`, each carrying
    the tenant's markers where it has text, so a response showing another tenant's can be found by text."""
    control, who = container.control, {"actor": "world", "role": "test"}
    tenant.command_id = control.request(
        session, meter_id=meter_id, kind="reconnect", request_key=f"world-{tenant.tag}",
        reason=f"restore ACC-{tenant.tag}", **who,
    ).id  # fmt: skip
    tenant.bulk_id = control.request_bulk(
        session, meter_ids=[meter_id], kind="read_now", request_key=f"world-bulk-{tenant.tag}",
        reason=f"re-read TX-{tenant.tag}", **who,
    ).id  # fmt: skip
    tenant.protection_id = control.add_protection(
        session, account_id=tenant.account_id, kind="medical", reason=f"oxygen at ACC-{tenant.tag}",
        valid_from=T0, valid_until=None, **who,
    ).id  # fmt: skip
    tenant.emergency_id = control.declare_emergency(
        session, site_id=tenant.site_id, reason=f"storm over SP-{tenant.tag}", starts_at=T0 + timedelta(days=5),
        ends_at=T0 + timedelta(days=6), **who,
    ).id  # fmt: skip
    tenant.subscription_id = container.notifications.subscribe(
        session, tenant.account_id, "webhook", f"https://hooks.example.org/ACC-{tenant.tag}",
        secret="s" * 32, **who,
    ).id  # fmt: skip


@dataclass
class World:
    a: Tenant
    a2: Tenant  # a second customer on site A
    b: Tenant


def build_world(container: Container) -> World:
    registry = container.registry
    with container.session_factory() as session, session.begin():
        site_a = registry.create_site(
            session,
            code="SITEA",
            name="Site A",
            timezone="Africa/Nairobi",
            currency="KES",
            holiday_country="KE",
        )
        site_b = registry.create_site(
            session,
            code="SITEB",
            name="Site B Hiddenname",
            timezone="Africa/Lagos",
            currency="NGN",
            holiday_country="NG",
        )
        a = _tenant(container, session, site_a.id, "SITEA", "A1", "Africa/Nairobi")
        a2 = _tenant(container, session, site_a.id, "SITEA", "A2", "Africa/Nairobi")
        b = _tenant(container, session, site_b.id, "SITEB", "B1", "Africa/Lagos")
        # A bill for each tenant's 1 March, so bills too can be guessed at.
        billing = BillingService(container.clock, registry, LedgerService(container.clock, registry))
        for tenant, currency, zone in (
            (a, "KES", "Africa/Nairobi"),
            (a2, "KES", "Africa/Nairobi"),
            (b, "NGN", "Africa/Lagos"),
        ):
            tariff = billing.store_tariff(
                session,
                site_id=tenant.site_id,
                code="FLAT",
                document={"name": "flat", "currency": currency, "timezone": zone, "periods": ["all"],
                          "energy": {"all_year/all": "10"}},
            )  # fmt: skip
            billing.assign_tariff(
                session, account_id=tenant.account_id, tariff_id=tariff.id, effective_from=date(2026, 1, 1)
            )
            report = billing.run_billing(
                session, tenant.site_id, date(2026, 3, 1), date(2026, 3, 2), account_ids=[tenant.account_id]
            )
            [outcome] = report.accounts
            assert outcome.bill is not None, outcome.reason
            tenant.bill_id = outcome.bill.id
            started = container.payments.start_checkout(
                session, account_id=tenant.account_id, amount_minor=50_000, provider="sandbox",
                actor="world", role="test",
            )  # fmt: skip
            tenant.payment_id = started.payment.id
            _control_and_alerts(container, session, tenant, meter_id=registry.meter_by_serial(
                session, tenant.serial).id)  # fmt: skip
    b.markers += ["SITEB", "Site B Hiddenname"]
    return World(a, a2, b)
