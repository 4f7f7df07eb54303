"""People for API tests: users with roles (and a second factor when their roles need one), signed-in clients.

Clients talk to https://testserver so the Secure session cookie is sent back, and carry the session's CSRF token
in their default headers, as a browser page of openami would.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

import pyotp
from fastapi import FastAPI
from fastapi.testclient import TestClient

from openami.bootstrap import Container
from openami.security.identity import IdentityService, needs_second_factor
from openami.security.models import Role
from openami.security.passwords import Argon2Cost

# Cheap hashing for tests that make many people (the real cost is measured by `make bench`).
TEST_COST = Argon2Cost(time_cost=1, memory_kib=8, parallelism=1)
BASE_URL = "https://testserver"


@dataclass(frozen=True)
class Person:
    user_id: int
    username: str
    password: str
    totp_secret: str | None


def make_person(
    container: Container,
    username: str,
    grants: Iterable[tuple[Role, int]] = (),
    *,
    customer_ids: Iterable[int] = (),
    password: str = "correct horse battery 9",  # noqa: S107  (a test person's)
) -> Person:
    """A user with `grants` ((role, site_id)); enrolled in TOTP when a role needs it; linked to customers."""
    grants = list(grants)
    identity = IdentityService(container.clock, TEST_COST)
    with container.session_factory() as session, session.begin():
        user = identity.create_user(session, username, username.title(), password)
        for role, site_id in grants:
            identity.grant_role(session, user.id, role, site_id)
        for customer_id in customer_ids:
            identity.link_customer(session, user.id, customer_id)
        secret = None
        if needs_second_factor({role for role, _ in grants}):
            secret = identity.enroll_totp(session, user.id).secret
    return Person(user.id, user.username, password, secret)


def totp_now(container: Container, person: Person) -> str | None:
    if person.totp_secret is None:
        return None
    return pyotp.TOTP(person.totp_secret).at(container.clock.now())


def sign_in(app: FastAPI, container: Container, person: Person) -> TestClient:
    """A client signed in as `person` (a browser session), with the CSRF header set."""
    client = TestClient(app, base_url=BASE_URL)
    response = client.post(
        "/api/v1/auth/login",
        json={
            "username": person.username,
            "password": person.password,
            "totp_code": totp_now(container, person),
        },
    )
    assert response.status_code == 200, response.text
    client.headers["X-CSRF-Token"] = response.json()["csrf_token"]
    return client


def token_client(
    app: FastAPI,
    container: Container,
    person: Person,
    roles: Iterable[Role],
    site_ids: Iterable[int],
    ttl: timedelta = timedelta(days=30),
) -> TestClient:
    """A client acting with an API token of `person` (no cookie, no CSRF header)."""
    identity = IdentityService(container.clock)
    with container.session_factory() as session, session.begin():
        issued = identity.issue_token(session, person.user_id, "test", set(roles), set(site_ids), ttl)
    client = TestClient(app, base_url=BASE_URL)
    client.headers["Authorization"] = f"Bearer {issued.secret}"
    return client
