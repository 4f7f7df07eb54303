"""Every route declares the permission it needs, and every role is allowed or refused exactly as declared.

The matrix signs in one person per role (a browser session, second factor included) on site A and calls every
route with ids of site A's objects. "Allowed" means the route ran past authorisation (any status but 401/403);
"refused" means 403. Bodies are `{}`, so allowed writes stop at validation (422) and change nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

from openami.api.app import create_app
from openami.bootstrap import Container, bootstrap
from openami.common.clock import ManualClock
from openami.config import Settings
from openami.security.models import Role
from openami.security.permissions import ROLE_PERMISSIONS, Permission, roles_granting
from openami.storage.all_models import metadata
from openami.storage.db import make_engine
from tests.auth_helpers import make_person, sign_in
from tests.unit.api.routes import RouteInfo, api_routes
from tests.unit.api.world import T0, World, build_world


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FastAPI, Container, World]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('authz') / 'authz.db'}"
    engine: Engine = make_engine(url)
    metadata.create_all(engine)
    clock = ManualClock(T0.replace(day=2))
    container = bootstrap(Settings(database_url=url), clock=clock, engine=engine)
    world = build_world(container)
    yield create_app(container), container, world
    engine.dispose()


def test_every_route_declares_one_permission(setup: tuple[FastAPI, Container, World]) -> None:
    app, _, _ = setup
    routes = api_routes(app)
    undeclared = [str(r) for r in routes if not r.declared]
    assert undeclared == [], f"routes without require(...) or PUBLIC: {undeclared}"
    several = [str(r) for r in routes if len(r.declared) > 1]
    assert several == [], f"routes declaring more than one permission: {several}"
    public = sorted(str(r) for r in routes if r.public)
    assert public == [
        # The sandbox checkout page and its answer: a signed link is their authority (prepayment.providers).
        "GET /api/v1/payments/sandbox/checkout/{token}",
        "GET /healthz",
        "POST /api/v1/auth/login",
        "POST /api/v1/payments/sandbox/checkout/{token}/{outcome}",
        # Payment providers' webhooks: each is authenticated by the provider's signature, not a session.
        "POST /api/v1/payments/webhooks/{provider}",
    ]
    assert len(routes) > 40  # the whole API, not an empty list that passes


def _allowed(route: RouteInfo, role: Role) -> bool:
    return route.public or route.permission in ROLE_PERMISSIONS[role]


def test_every_role_against_every_route(setup: tuple[FastAPI, Container, World]) -> None:
    app, container, world = setup
    routes = api_routes(app)
    # Signing out ends the session the other calls use: it goes last.
    routes.sort(key=lambda r: r.path == "/api/v1/auth/logout")
    bystander = make_person(container, "bystander", [(Role.CUSTOMER, world.a.site_id)])
    checked = 0
    mismatches = []
    for role in Role:
        person = make_person(
            container,
            f"matrix-{role.value.replace('_', '-')}",
            [(role, world.a.site_id)],
            customer_ids=[world.a.customer_id] if role is Role.CUSTOMER else [],
        )
        client = sign_in(app, container, person)
        values = world.a.values(
            user_id=bystander.user_id,
            token_id=1,
            role="customer",
            provider="sandbox",
            token="x",
            outcome="failed",
        )
        for route in routes:
            response = route.call(client, values)
            checked += 1
            if _allowed(route, role):
                ok = response.status_code not in (401, 403)
            else:
                ok = response.status_code == 403
            if not ok:
                mismatches.append((role.value, str(route), response.status_code, response.text[:120]))
    assert mismatches == []
    assert checked == len(Role) * len(routes)


def test_the_matrix_is_what_the_roles_are_for() -> None:
    """The declared permissions keep the brief's meaning of each role."""
    assert ROLE_PERMISSIONS[Role.ADMIN] == frozenset(Permission)
    auditor = ROLE_PERMISSIONS[Role.AUDITOR]
    assert Permission.AUDIT_READ in auditor
    assert not any(p.value.endswith((":write", ":edit", ":manage", ":create")) for p in auditor)
    assert ROLE_PERMISSIONS[Role.CUSTOMER] == {
        Permission.READINGS_READ,
        Permission.BILLS_READ,
        Permission.WALLETS_READ,
        Permission.NOTIFICATIONS_READ,
        Permission.NOTIFICATIONS_WRITE,  # their own alert thresholds, quiet hours and addresses
        Permission.SELF,
    }
    # Cutting power: operators and admins only; when a site may be cut at all: admins only.
    assert roles_granting(Permission.RELAY_OPERATE) == {Role.ADMIN, Role.OPERATOR}
    assert roles_granting(Permission.CONTROL_POLICY_WRITE) == {Role.ADMIN}
    assert Permission.CREDIT_RULES_WRITE not in ROLE_PERMISSIONS[Role.CUSTOMER]
    assert Permission.BILLS_RUN in ROLE_PERMISSIONS[Role.BILLING]
    assert Permission.BILLS_RUN not in ROLE_PERMISSIONS[Role.CUSTOMER]
    assert Permission.READINGS_EDIT in ROLE_PERMISSIONS[Role.OPERATOR]
    assert Permission.READINGS_EDIT not in ROLE_PERMISSIONS[Role.BILLING]
    assert Permission.USERS_MANAGE not in ROLE_PERMISSIONS[Role.OPERATOR]


def test_the_documented_table_is_the_one_enforced() -> None:
    text = (Path(__file__).parents[3] / "docs" / "security.md").read_text()
    header = "| permission | " + " | ".join(role.value for role in Role) + " |"
    assert header in text
    for permission in Permission:
        cells = " | ".join("yes" if permission in ROLE_PERMISSIONS[role] else "" for role in Role)
        assert f"| `{permission.value}` | {cells} |" in text, permission
