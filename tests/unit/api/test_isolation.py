"""Tenants see nothing of each other, whatever ids they guess.

Two sites (A, B); on site A two customers (A1, A2), on site B one (B1). Customer A1 and the staff of site A call
every route with the ids, serials, codes and numbers of the other tenants' objects (and of their own, to show the
routes do answer). No response carries another tenant's data, and no write lands in another tenant's objects.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from openami.api.app import create_app
from openami.bootstrap import Container, bootstrap
from openami.common.clock import ManualClock
from openami.config import Settings
from openami.readings.models import IntervalReading
from openami.registry.models import Account, Customer, Meter, ServicePoint, Transformer
from openami.security.audit import AuditEntry
from openami.security.models import Role
from openami.storage.all_models import metadata
from openami.storage.db import make_engine
from tests.auth_helpers import make_person, sign_in, token_client
from tests.unit.api.routes import RouteInfo, api_routes
from tests.unit.api.world import T0, Tenant, World, build_world

READ_PARAMS = "?start=2026-03-01T00:00:00Z&end=2026-03-02T00:00:00Z&first=2026-03-01&last=2026-03-01"
# A site's published terms, which its customers may read: the same for every customer of the site, so a
# neighbour on one's own site naming it learns nothing of the neighbour (another site's still answer 404).
SITE_TERMS = frozenset({"GET /api/v1/sites/{site_id}/credit-rules"})


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FastAPI, Container, World]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('isolation') / 'isolation.db'}"
    engine: Engine = make_engine(url)
    metadata.create_all(engine)
    container = bootstrap(Settings(database_url=url), clock=ManualClock(T0.replace(day=2)), engine=engine)
    world = build_world(container)
    yield create_app(container), container, world
    engine.dispose()


def _fingerprint(container: Container, tenant: Tenant) -> tuple[int, ...]:
    """Counts and sums that change if anything of `tenant` is written."""
    with container.session_factory() as session:
        return (
            session.scalar(
                select(func.count()).select_from(Customer).where(Customer.site_id == tenant.site_id)
            ),
            session.scalar(
                select(func.count()).select_from(Account).where(Account.site_id == tenant.site_id)
            ),
            session.scalar(select(func.count()).select_from(Meter).where(Meter.site_id == tenant.site_id)),
            session.scalar(
                select(func.count()).select_from(ServicePoint).where(ServicePoint.site_id == tenant.site_id)
            ),
            session.scalar(
                select(func.count()).select_from(Transformer).where(Transformer.site_id == tenant.site_id)
            ),
            session.scalar(
                select(func.coalesce(func.sum(IntervalReading.energy_wh), 0))
                .join(Meter, Meter.id == IntervalReading.meter_id)
                .where(Meter.site_id == tenant.site_id)
            ),
            session.scalar(
                select(func.count()).select_from(AuditEntry).where(AuditEntry.site_id == tenant.site_id)
            ),
        )  # type: ignore[return-value]


def _probe(
    client: TestClient, route: RouteInfo, tenant: Tenant, extra: dict[str, object]
) -> tuple[int, str, str]:
    """(status, response text, what the probe itself sent: its URL and body)."""
    values = tenant.values(**extra)
    if route.method == "GET":
        response = client.get(route.url(values) + READ_PARAMS)
        return response.status_code, response.text, str(response.request.url)
    # A plausible body aimed at the other tenant: its site, customer, account...
    body = {
        "site_id": tenant.site_id,
        "customer_id": tenant.customer_id,
        "reference": "INTRUDER",
        "name": "intruder",
        "number": "INTRUDER",
        "kind": "prepaid",
        "code": "INTRUDER",
        "rating_kva": 50,
        "rated_current_a": 60,
        "account_id": tenant.account_id,
        "transformer_id": tenant.transformer_id,
        "serial": "INTRUDER-1",
        "model": "x",
        "auth_key": "00" * 32,
        "energy_wh": 1,
        "reason": "probing",
        "role": "admin",
        "new_password": "intruder password 1",
        "disabled": True,
    }
    response = route.call(client, values, body)
    return response.status_code, response.text, f"{response.request.url} {body}"


def _leaks(text: str, victims: list[Tenant], sent: str) -> list[str]:
    """Another tenant's data in `text`; a value the probe sent itself (a guessed serial echoed in "no meter with
    serial ...", the same answer as for one that does not exist) is not a leak."""
    return [m for victim in victims for m in victim.markers if m in text and m not in sent]


def _check(
    client: TestClient,
    app: FastAPI,
    container: Container,
    victims: list[Tenant],
    extra: dict[str, object],
    own_site_ids: frozenset[int] = frozenset(),
) -> int:
    before = [_fingerprint(container, v) for v in victims]
    sent = 0
    problems = []
    for route in api_routes(app):
        if route.path in ("/api/v1/auth/logout", "/api/v1/auth/login"):
            continue
        for victim in victims:
            if str(route) in SITE_TERMS and victim.site_id in own_site_ids:
                continue
            status, text, request = _probe(client, route, victim, extra)
            sent += 1
            if status >= 500:
                problems.append((str(route), victim.tag, status, text[:200]))
            if "{" in route.path and 200 <= status < 300:
                # The route named one of the other tenant's objects and answered: whatever the body holds.
                problems.append((str(route), victim.tag, status, f"answered: {text[:200]}"))
            leaked = _leaks(text, victims, request)
            if leaked:
                problems.append((str(route), victim.tag, status, f"leaks {leaked}: {text[:200]}"))
    assert problems == []
    assert [_fingerprint(container, v) for v in victims] == before
    return sent


def test_a_customer_sees_only_their_own_account(setup: tuple[FastAPI, Container, World]) -> None:
    app, container, world = setup
    a1 = make_person(
        container, "customer-a1", [(Role.CUSTOMER, world.a.site_id)], customer_ids=[world.a.customer_id]
    )
    client = sign_in(app, container, a1)
    # Their own: readings of their meter and account answer, with their data.
    own = client.get(f"/api/v1/meters/{world.a.serial}/readings/intervals{READ_PARAMS}&resolution=day")
    assert own.status_code == 200, own.text
    assert own.json()["points"][0]["energy_wh"] > 0
    account = client.get(f"/api/v1/sites/SITEA/accounts/{world.a.account_number}/readings/instants")
    assert account.status_code == 200
    # Everyone else's, by every route and every id: nothing.
    b_staff = make_person(container, "billing-b", [(Role.BILLING, world.b.site_id)])
    b_token = token_client(app, container, b_staff, [Role.BILLING], [world.b.site_id])
    b_token_id = b_token.get("/api/v1/auth/me").json()["token_id"]
    extra = {"user_id": b_staff.user_id, "token_id": b_token_id, "role": "admin"}
    sent = _check(client, app, container, [world.a2, world.b], extra, frozenset({world.a.site_id}))
    assert sent > 80


def test_the_staff_of_one_site_see_nothing_of_another(setup: tuple[FastAPI, Container, World]) -> None:
    app, container, world = setup
    admin = make_person(container, "admin-a", [(Role.ADMIN, world.a.site_id)])
    auditor = make_person(container, "auditor-a", [(Role.AUDITOR, world.a.site_id)])
    b_staff = make_person(container, "operator-b", [(Role.OPERATOR, world.b.site_id)])
    b_token = token_client(app, container, b_staff, [Role.OPERATOR], [world.b.site_id])
    b_token_id = b_token.get("/api/v1/auth/me").json()["token_id"]
    extra = {"user_id": b_staff.user_id, "token_id": b_token_id, "role": "operator"}
    for person in (admin, auditor):
        client = sign_in(app, container, person)
        mine = client.get("/api/v1/meters").json()
        assert {m["serial"] for m in mine} == {world.a.serial, world.a2.serial}
        _check(client, app, container, [world.b], extra)
    # An API token of site A's admin is held to the same; B's token still works after all this.
    token = token_client(app, container, admin, [Role.ADMIN], [world.a.site_id])
    _check(token, app, container, [world.b], extra)
    assert b_token.get("/api/v1/auth/me").status_code == 200
