"""Property-based fuzz of the whole API from its OpenAPI schema: whatever is sent, the server never fails (no 500)
and never answers with another tenant's data.

The app runs in-process (ASGI) over two tenants (tests/unit/api/world.py: sites A and B, customers A1, A2, B1), so
generated ids and serials often name real objects. It is fuzzed as site A's admin and as customer A1, each with
an API token; no response may carry anything of tenant B (or, for customer A1, of customer A2).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from openami.api.app import create_app
from openami.bootstrap import Container, bootstrap
from openami.common.clock import ManualClock
from openami.config import Settings
from openami.security.identity import IdentityService
from openami.security.models import Role
from openami.storage.all_models import metadata
from openami.storage.db import make_engine
from tests.auth_helpers import make_person
from tests.unit.api.world import T0, Tenant, World, build_world

EXAMPLES_PER_OPERATION = 40


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, Container, World]]:
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{workdir / 'fuzz.db'}"
    engine = make_engine(url)
    metadata.create_all(engine)
    container = bootstrap(Settings(database_url=url), clock=ManualClock(T0.replace(day=2)), engine=engine)
    world = build_world(container)
    yield create_app(container), container, world
    engine.dispose()


def _token(container: Container, username: str, role: Role, site_id: int, customers: list[int]) -> str:
    person = make_person(container, username, [(role, site_id)], customer_ids=customers)
    with container.session_factory() as session, session.begin():
        issued = IdentityService(container.clock).issue_token(
            session, person.user_id, "fuzz", {role}, {site_id}, T0.replace(day=30) - T0
        )
    return issued.secret


def _fuzz(app: object, token: str, others: list[Tenant]) -> tuple[int, int, Counter[int]]:
    """(requests sent, operations, statuses) fuzzing every operation with `token`; fails on a 500 or a leak of
    `others`."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    # Revoking a token or a role may hit the fuzzer's own (ids are small): those go last, so every other route is
    # fuzzed with the token at full strength.
    operations.sort(key=lambda op: op.method.upper() == "DELETE")
    markers = [m for tenant in others for m in tenant.markers]
    sent = 0
    statuses: Counter[int] = Counter()
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def no_failure_no_leak(case: schemathesis.Case) -> None:
            nonlocal sent
            response = case.call(headers={"Authorization": f"Bearer {token}"})
            sent += 1
            statuses[response.status_code] += 1
            where = f"{case.method} {case.formatted_path}"
            # Bytes, not text: some answers are PDF invoices.
            body = response.content.decode("utf-8", errors="replace")
            assert response.status_code < 500, f"{where}: {response.status_code} {body[:500]}"
            asked = f"{case.formatted_path} {case.query} {case.body}"
            leaked = [m for m in markers if m.encode() in response.content and m not in asked]
            assert not leaked, f"{where} leaked {leaked}: {body[:300]}"

        no_failure_no_leak()
    return sent, len(operations), statuses


def test_no_request_fails_the_server_or_leaks_another_tenant(
    tenants: tuple[object, Container, World],
) -> None:
    app, container, world = tenants
    admin = _token(container, "fuzz-admin-a", Role.ADMIN, world.a.site_id, [])
    customer = _token(container, "fuzz-customer-a1", Role.CUSTOMER, world.a.site_id, [world.a.customer_id])
    sent_admin, operations, admin_statuses = _fuzz(app, admin, [world.b])
    sent_customer, _, customer_statuses = _fuzz(app, customer, [world.a2, world.b])
    assert operations >= 45  # every route of the API is in the schema, so every route gets fuzzed
    # The token stayed valid: most of the admin's requests got past authentication to the routes themselves.
    assert admin_statuses[401] < sent_admin / 10, admin_statuses
    assert sum(n for status, n in admin_statuses.items() if status < 300) > sent_admin / 10, admin_statuses
    print(
        f"fuzz: {sent_admin + sent_customer} requests over {operations} operations "
        f"({sent_admin} as site A's admin, {sent_customer} as customer A1): no server error, no leak; "
        f"statuses as admin {dict(sorted(admin_statuses.items()))}, "
        f"as customer {dict(sorted(customer_statuses.items()))}"
    )
