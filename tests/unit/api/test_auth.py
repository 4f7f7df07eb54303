"""Signing in and proving who one is: browser sessions with CSRF, API tokens, and every way of getting it wrong.

Each refusal has the right status and a clear message, is logged, and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from openami.api.app import MAX_BODY_BYTES, create_app
from openami.bootstrap import Container, bootstrap
from openami.common.clock import ManualClock
from openami.config import Settings
from openami.registry.models import Customer
from openami.security.audit import AuditEntry
from openami.security.models import Role
from openami.security.web_sessions import COOKIE_NAME, IDLE_TIMEOUT
from tests.auth_helpers import BASE_URL, Person, make_person, sign_in, token_client, totp_now


@pytest.fixture
def container(sqlite_engine: Engine, sqlite_url: str, clock: ManualClock) -> Container:
    return bootstrap(Settings(database_url=sqlite_url), clock=clock, engine=sqlite_engine)


@pytest.fixture
def app(container: Container) -> FastAPI:
    return create_app(container)


@pytest.fixture
def site_id(container: Container) -> int:
    with container.session_factory() as session, session.begin():
        site = container.registry.create_site(
            session,
            code="KSM",
            name="Kisumu",
            timezone="Africa/Nairobi",
            currency="KES",
            holiday_country="KE",
        )
    return site.id


@pytest.fixture
def operator(container: Container, site_id: int) -> Person:
    return make_person(container, "otieno", [(Role.OPERATOR, site_id)])


@pytest.fixture
def billing(container: Container, site_id: int) -> Person:
    return make_person(container, "wanjiru", [(Role.BILLING, site_id)])


@pytest.fixture
def technician(container: Container, site_id: int) -> Person:
    """A role that needs no second factor."""
    return make_person(container, "kamau", [(Role.FIELD_TECHNICIAN, site_id)])


@pytest.fixture
def anonymous(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url=BASE_URL) as client:
        yield client


def _login(client: TestClient, person: Person, password: str | None = None, code: str | None = None) -> Any:
    return client.post(
        "/api/v1/auth/login",
        json={"username": person.username, "password": password or person.password, "totp_code": code},
    )


def _customers(container: Container) -> int:
    with container.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(Customer)) or 0)


def _audit(container: Container, action: str) -> list[AuditEntry]:
    with container.session_factory() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def test_a_session_cookie_is_secure_httponly_strict_and_the_csrf_token_is_returned(
    container: Container, anonymous: TestClient, operator: Person
) -> None:
    response = _login(anonymous, operator, code=totp_now(container, operator))
    assert response.status_code == 200, response.text
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    lowered = cookie.lower()
    assert "httponly" in lowered
    assert "secure" in lowered
    assert "samesite=strict" in lowered
    body = response.json()
    assert (body["username"], body["via"]) == ("otieno", "session")
    assert len(body["csrf_token"]) >= 40
    assert body["grants"] == [{"role": "operator", "site_id": 1}]
    assert anonymous.get("/api/v1/auth/me").json()["username"] == "otieno"
    [entry] = _audit(container, "auth.login")
    assert (entry.actor, entry.role, entry.address) == ("otieno", "operator", "testclient")


def test_state_changing_requests_of_a_session_need_its_csrf_token(
    app: FastAPI, container: Container, operator: Person, site_id: int
) -> None:
    client = sign_in(app, container, operator)
    body = {"site_id": site_id, "reference": "C-1", "name": "Achieng"}
    csrf = client.headers.pop("X-CSRF-Token")
    missing = client.post("/api/v1/customers", json=body)
    assert missing.status_code == 403
    assert "CSRF" in missing.json()["detail"]
    wrong = client.post("/api/v1/customers", json=body, headers={"X-CSRF-Token": "x" * 43})
    assert wrong.status_code == 403
    assert _customers(container) == 0  # nothing changed
    assert client.get("/api/v1/customers").status_code == 200  # reading needs no CSRF token
    done = client.post("/api/v1/customers", json=body, headers={"X-CSRF-Token": csrf})
    assert done.status_code == 201, done.text
    assert _customers(container) == 1


def test_wrong_password_and_unknown_user_are_the_same_401(
    container: Container, anonymous: TestClient, operator: Person
) -> None:
    wrong = _login(anonymous, operator, password="not the password 1", code=totp_now(container, operator))
    unknown = anonymous.post(
        "/api/v1/auth/login", json={"username": "nobody", "password": "whatever it is 1", "totp_code": None}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"] == "wrong username or password"
    assert COOKIE_NAME not in anonymous.cookies
    refused = _audit(container, "auth.login_refused")
    assert [(e.actor, e.reason) for e in refused] == [
        ("otieno", "invalid_credentials"),
        ("nobody", "invalid_credentials"),
    ]


def test_guessing_locks_the_account_for_a_while_with_retry_after(
    container: Container, clock: ManualClock, anonymous: TestClient, technician: Person
) -> None:
    for _ in range(5):
        assert _login(anonymous, technician, password="a wrong guess 123").status_code == 401
    locked = _login(anonymous, technician)  # even the right password, during the lock
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) > 0
    assert "too many failed logins" in locked.json()["detail"]
    clock.advance(timedelta(minutes=2))
    assert _login(anonymous, technician).status_code == 200


def test_a_second_factor_is_required_and_a_code_works_once(
    container: Container, clock: ManualClock, anonymous: TestClient, operator: Person
) -> None:
    none = _login(anonymous, operator)
    assert none.status_code == 401
    assert "one-time code" in none.json()["detail"]
    code = totp_now(container, operator)
    assert _login(anonymous, operator, code=code).status_code == 200
    reused = _login(anonymous, operator, code=code)
    assert reused.status_code == 401
    assert "already used" in reused.json()["detail"]
    clock.advance(timedelta(seconds=30))
    assert _login(anonymous, operator, code=totp_now(container, operator)).status_code == 200


def test_forged_replayed_and_idle_session_cookies_are_refused(
    app: FastAPI, container: Container, clock: ManualClock, technician: Person
) -> None:
    forged = TestClient(app, base_url=BASE_URL, cookies={COOKIE_NAME: "forged" * 7})
    response = forged.get("/api/v1/auth/me")
    assert response.status_code == 401
    assert "not a valid session" in response.json()["detail"]

    client = sign_in(app, container, technician)
    stolen = client.cookies[COOKIE_NAME]
    assert client.post("/api/v1/auth/logout").status_code == 204
    replay = TestClient(app, base_url=BASE_URL, cookies={COOKIE_NAME: stolen})
    after_logout = replay.get("/api/v1/auth/me")
    assert after_logout.status_code == 401
    assert "signed out" in after_logout.json()["detail"]

    idle = sign_in(app, container, technician)
    clock.advance(IDLE_TIMEOUT + timedelta(seconds=1))
    assert idle.get("/api/v1/auth/me").status_code == 401


def test_api_tokens_are_shown_once_listed_without_secret_and_refused_when_expired_or_revoked(
    app: FastAPI, container: Container, clock: ManualClock, billing: Person, site_id: int
) -> None:
    browser = sign_in(app, container, billing)
    issued = browser.post(
        "/api/v1/auth/tokens",
        json={"name": "meter reader script", "roles": ["billing"], "site_ids": [site_id], "ttl_days": 1},
    )
    assert issued.status_code == 201, issued.text
    secret = issued.json()["secret"]
    listed = browser.get("/api/v1/auth/tokens").json()
    assert [t["name"] for t in listed] == ["meter reader script"]
    assert secret not in str(listed)

    script = TestClient(app, base_url=BASE_URL, headers={"Authorization": f"Bearer {secret}"})
    me = script.get("/api/v1/auth/me").json()
    assert (me["via"], me["token_id"]) == ("token", issued.json()["id"])
    minted = script.post(
        "/api/v1/auth/tokens",
        json={"name": "more", "roles": ["billing"], "site_ids": [site_id], "ttl_days": 1},
    )
    assert minted.status_code == 403  # a token cannot mint tokens
    assert "browser session" in minted.json()["detail"]

    clock.advance(timedelta(days=1))
    expired = script.get("/api/v1/auth/me")
    assert expired.status_code == 401
    assert expired.json()["detail"] == "this API token has expired"

    fresh = token_client(app, container, billing, [Role.BILLING], [site_id])
    token_id = fresh.get("/api/v1/auth/me").json()["token_id"]
    assert fresh.delete(f"/api/v1/auth/tokens/{token_id}").status_code == 204
    revoked = fresh.get("/api/v1/auth/me")
    assert revoked.status_code == 401
    assert revoked.json()["detail"] == "this API token was revoked"
    malformed = TestClient(app, base_url=BASE_URL, headers={"Authorization": "Bearer nonsense"})
    assert malformed.get("/api/v1/auth/me").status_code == 401
    basic = TestClient(app, base_url=BASE_URL, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert "Bearer" in basic.get("/api/v1/auth/me").json()["detail"]


def test_no_credentials_is_401_and_a_role_without_the_permission_is_403(
    app: FastAPI, container: Container, anonymous: TestClient, billing: Person
) -> None:
    response = anonymous.get("/api/v1/meters")
    assert response.status_code == 401
    assert "sign in" in response.json()["detail"]
    assert response.headers["WWW-Authenticate"] == "Bearer"
    client = sign_in(app, container, billing)
    edit = client.put(
        "/api/v1/meters/M-1/readings/intervals/2026-03-01T00:00:00Z", json={"energy_wh": 1, "reason": "x"}
    )
    assert edit.status_code == 403
    assert "readings:edit" in edit.json()["detail"]


def test_changing_ones_password_needs_the_current_one_and_ends_other_sessions(
    app: FastAPI, container: Container, technician: Person
) -> None:
    laptop = sign_in(app, container, technician)
    phone = sign_in(app, container, technician)
    wrong = laptop.post(
        "/api/v1/auth/password",
        json={"current_password": "not it at all 1", "new_password": "a new long secret 42"},
    )
    assert wrong.status_code == 403
    weak = laptop.post(
        "/api/v1/auth/password", json={"current_password": technician.password, "new_password": "short"}
    )
    assert weak.status_code == 422
    done = laptop.post(
        "/api/v1/auth/password",
        json={"current_password": technician.password, "new_password": "a new long secret 42"},
    )
    assert done.status_code == 204, done.text
    assert laptop.get("/api/v1/auth/me").status_code == 200
    assert phone.get("/api/v1/auth/me").status_code == 401
    assert _login(TestClient(app, base_url=BASE_URL), technician).status_code == 401
    renamed = Person(technician.user_id, technician.username, "a new long secret 42", None)
    assert _login(TestClient(app, base_url=BASE_URL), renamed).status_code == 200


def test_an_oversized_body_is_refused_before_any_route_runs(
    app: FastAPI, container: Container, operator: Person, site_id: int
) -> None:
    client = sign_in(app, container, operator)
    huge = {"site_id": site_id, "reference": "C-1", "name": "x" * (MAX_BODY_BYTES + 1)}
    response = client.post("/api/v1/customers", json=huge)
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]
    chunked = client.post(
        "/api/v1/customers",
        content=iter([b'{"site_id": 1, "name": "', b"x" * MAX_BODY_BYTES, b'"}']),
        headers={"Content-Type": "application/json"},
    )
    assert chunked.status_code == 413
    assert _customers(container) == 0
