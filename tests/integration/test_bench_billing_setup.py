"""The billing bench writes its registry rows in bulk, past the services: they must be exactly the rows the
registry and billing services write for the same accounts, and its readings must read back whole."""

from __future__ import annotations

from typing import Any

import pytest
from bench import billing
from bench.fixtures import bench_settings, scratch_postgres, throwaway_master_key
from sqlalchemy import Engine, text

from openami.billing.service import BillingService
from openami.bootstrap import Container, bootstrap
from openami.common.clock import ManualClock
from openami.ledger.service import LedgerService

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ACCOUNTS = 3
# Compared whole, ids and references included; meter keys are compared opened (a seal has a random nonce).
TABLES = ("site", "tariff", *billing.REGISTRY_COLUMNS)


def _billing(container: Container) -> BillingService:
    return BillingService(
        container.clock, container.registry, LedgerService(container.clock, container.registry)
    )


def _through_the_services(container: Container, accounts: int) -> None:
    """The bench world's registry as the services make it, one call per row (what the bench did before)."""
    registry, billing_service = container.registry, _billing(container)
    with container.session_factory() as session, session.begin():
        site = registry.create_site(
            session, code="BILL", name="bench", timezone="UTC", currency="KES", holiday_country="KE"
        )
        tariff = billing_service.store_tariff(session, site_id=site.id, code="TOU", document=billing.TOU)
        for n in range(accounts):
            args = billing.service_arguments(n)
            customer = registry.create_customer(session, site_id=site.id, **args["customer"])
            account = registry.create_account(
                session, site_id=site.id, customer_id=customer.id, **args["account"]
            )
            point = registry.create_service_point(
                session, site_id=site.id, account_id=account.id, **args["service_point"]
            )
            registry.create_meter(session, site_id=site.id, service_point_id=point.id, **args["meter"])
            billing_service.assign_tariff(
                session, account_id=account.id, tariff_id=tariff.id, effective_from=billing.TARIFF_FROM
            )


def _rows(engine: Engine, table: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT * FROM {table} ORDER BY id")).mappings().all()  # noqa: S608
    return [{k: v for k, v in row.items() if k != "auth_key"} for row in rows]


def _keys(container: Container) -> dict[str, bytes]:
    with container.session_factory() as session:
        return {m.serial: m.auth_key for m in container.registry.meter_infos(session)}


def test_bulk_setup_writes_what_the_services_write_and_reads_back_whole() -> None:
    with scratch_postgres() as bulk_url, scratch_postgres() as services_url:
        bulk = bootstrap(bench_settings(bulk_url, throwaway_master_key()), clock=ManualClock(billing.NOW))
        services = bootstrap(
            bench_settings(services_url, throwaway_master_key()), clock=ManualClock(billing.NOW)
        )
        try:
            world = billing.build_world(bulk, _billing(bulk), ACCOUNTS)
            _through_the_services(services, ACCOUNTS)

            for table in TABLES:
                assert _rows(bulk.engine, table) == _rows(services.engine, table), table
            keys = _keys(bulk)
            assert keys == _keys(services)
            assert keys == {serial: billing.meter_key(serial) for serial in keys}
            assert len(keys) == ACCOUNTS

            rows, energy_wh = billing.read_readings(bulk.engine)
            assert rows == world.setup.readings == ACCOUNTS * billing.HOURS
            assert energy_wh == billing.expected_energy_wh(world.meter_ids) > 0

            # The ids came from the tables' sequences: the services go on inserting after them.
            with bulk.session_factory() as session, session.begin():
                extra = bulk.registry.create_customer(
                    session, site_id=world.site_id, reference="after-bulk", name="n"
                )
            assert extra.id == ACCOUNTS + 1
        finally:
            bulk.close()
            services.close()
