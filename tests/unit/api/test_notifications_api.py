"""Notification settings over HTTP: a customer sets thresholds, quiet hours and language, subscribes a webhook
and unsubscribes it, and reads the delivery log of what was sent; every change is in the operation log; bad input
answers 422 naming the field; another account's settings and subscriptions answer 404 and stay as they were."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from openami.api.app import create_app
from openami.bootstrap import Container, bootstrap
from openami.common.clock import ManualClock
from openami.config import Settings
from openami.notifications.channels import ConsoleChannel
from openami.notifications.interfaces import ChannelKind, LowBalance
from openami.security.audit import AuditEntry
from openami.security.models import Role
from tests.auth_helpers import make_person, token_client
from tests.unit.api.world import World, build_world

NOON_NAIROBI = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
PREFERENCES = {
    "language": "zh-Hans",
    "low_balance": "20.00",
    "low_balance_days": 2,
    "quiet_start": "22:00:00",
    "quiet_end": "06:00:00",
}


@pytest.fixture
def setup(sqlite_engine: Engine, sqlite_url: str) -> tuple[FastAPI, Container, World]:
    clock = ManualClock(NOON_NAIROBI)
    container = bootstrap(Settings(database_url=sqlite_url), clock=clock, engine=sqlite_engine)
    return create_app(container), container, build_world(container)


def _customer(app: FastAPI, container: Container, world: World) -> TestClient:
    me = make_person(
        container, "customer-a1", [(Role.CUSTOMER, world.a.site_id)], customer_ids=[world.a.customer_id]
    )
    return token_client(app, container, me, [Role.CUSTOMER], [world.a.site_id])


def _actions(container: Container) -> list[tuple[str, str]]:
    with container.session_factory() as session:
        rows = session.execute(
            select(AuditEntry.action, AuditEntry.actor).where(AuditEntry.action.like("notifications.%"))
        ).all()
    return [(action, actor.split(" ")[0]) for action, actor in rows if actor != "world"]


def test_a_customer_sets_their_preferences_and_bad_ones_are_refused(
    setup: tuple[FastAPI, Container, World],
) -> None:
    app, container, world = setup
    client = _customer(app, container, world)
    url = f"/api/v1/accounts/{world.a.account_id}/notification-preferences"
    defaults = client.get(url).json()
    assert (defaults["language"], defaults["low_balance"], defaults["low_balance_days"]) == ("en", None, 3)
    stored = client.put(url, json=PREFERENCES)
    assert stored.status_code == 200, stored.text
    assert stored.json() | {"account_id": 0} == PREFERENCES | {"account_id": 0, "currency": "KES"}
    with container.session_factory() as session:
        kept = container.notifications.preferences(session, world.a.account_id)
    assert (kept.low_balance_minor, kept.quiet_start.isoformat() if kept.quiet_start else None) == (
        2000,
        "22:00:00",
    )
    assert _actions(container) == [("notifications.set_preferences", "customer-a1")]

    def refused(change: dict[str, object]) -> tuple[int, object]:
        response = client.put(url, json=PREFERENCES | change)
        body = response.json()
        return response.status_code, body.get("location", body["detail"])

    status, where = refused({"quiet_end": None})
    assert (status, where) == (422, f"notification preferences of account {world.a.account_id}")
    assert refused({"low_balance": "20.005"}) == (422, "low_balance")
    status, detail = refused({"low_balance_days": 400})
    assert (status, detail[0]["loc"]) == (422, ["body", "low_balance_days"])  # type: ignore[index]
    status, detail = refused({"language": "fr"})
    assert (status, detail[0]["loc"]) == (422, ["body", "language"])  # type: ignore[index]
    assert client.put(url, json={"language": "en"}).status_code == 422  # the thresholds are required
    assert client.get(url).json()["low_balance"] == "20.00"  # nothing changed by the refusals
    assert len(_actions(container)) == 1


def test_subscriptions_are_added_listed_and_removed_and_the_secret_never_shown(
    setup: tuple[FastAPI, Container, World],
) -> None:
    app, container, world = setup
    client = _customer(app, container, world)
    url = f"/api/v1/accounts/{world.a.account_id}/subscriptions"
    hook = {"channel": "webhook", "address": "https://phone.example.org/alerts", "secret": "k" * 24}
    added = client.post(url, json=hook)
    assert added.status_code == 201, added.text
    assert "k" * 24 not in added.text
    listed = client.get(url).json()
    assert [s["id"] for s in listed] == [world.a.subscription_id, added.json()["id"]]
    no_secret = client.post(url, json=hook | {"secret": None})
    assert (no_secret.status_code, no_secret.json()["location"]) == (422, "webhook secret")
    not_offered = client.post(url, json={"channel": "email", "address": "achieng@example.org"})
    assert (not_offered.status_code, not_offered.json()["location"]) == (422, "channel")
    assert "email" in not_offered.json()["detail"]
    bad_url = client.post(url, json=hook | {"address": "ftp://phone.example.org"})
    assert (bad_url.status_code, bad_url.json()["location"]) == (422, "webhook address")

    removed = client.delete(f"/api/v1/subscriptions/{added.json()['id']}")
    assert (removed.status_code, removed.json()["active"]) == (200, False)
    assert [s["id"] for s in client.get(url).json()] == [world.a.subscription_id]
    everything = client.get(url, params={"include_inactive": "true"}).json()
    assert [s["active"] for s in everything] == [True, False]
    assert _actions(container) == [
        ("notifications.subscribe", "customer-a1"),
        ("notifications.unsubscribe", "customer-a1"),
    ]


def test_another_accounts_settings_answer_404_and_stay_as_they_were(
    setup: tuple[FastAPI, Container, World],
) -> None:
    app, container, world = setup
    client = _customer(app, container, world)
    for tenant in (world.a2, world.b):
        prefs = f"/api/v1/accounts/{tenant.account_id}/notification-preferences"
        assert client.get(prefs).status_code == 404
        assert client.put(prefs, json=PREFERENCES).status_code == 404
        subs = f"/api/v1/accounts/{tenant.account_id}/subscriptions"
        assert client.get(subs).status_code == 404
        hook = {"channel": "webhook", "address": "https://evil.example.org/", "secret": "k" * 24}
        assert client.post(subs, json=hook).status_code == 404
        assert client.delete(f"/api/v1/subscriptions/{tenant.subscription_id}").status_code == 404
        assert client.get(f"/api/v1/accounts/{tenant.account_id}/messages").status_code == 404
    with container.session_factory() as session:
        for tenant in (world.a2, world.b):
            [sub] = container.notifications.subscriptions(session, tenant.account_id)
            assert (sub.id, sub.active) == (tenant.subscription_id, True)
    assert _actions(container) == []


def test_the_delivery_log_shows_each_message_and_its_attempts(
    setup: tuple[FastAPI, Container, World],
) -> None:
    app, container, world = setup
    client = _customer(app, container, world)
    url = f"/api/v1/accounts/{world.a.account_id}/notification-preferences"
    assert client.put(url, json=PREFERENCES | {"language": "en"}).status_code == 200
    with container.session_factory() as session, session.begin():
        event = LowBalance(world.a.account_id, 1500, "KES", Decimal("1.5"), "topup-7", NOON_NAIROBI)
        result = container.notifications.enqueue(session, event)
    assert len(result.messages) == 2  # amount and days rules, to the world's webhook
    log = client.get(f"/api/v1/accounts/{world.a.account_id}/messages")
    assert log.status_code == 200, log.text
    assert {(m["status"], m["channel"], len(m["deliveries"])) for m in log.json()} == {
        ("pending", "webhook", 0)
    }
    # Delivered through a console stand-in for the webhook: each message shows its one successful attempt.
    container.notifications.channels = {
        ChannelKind.WEBHOOK: ConsoleChannel(ChannelKind.WEBHOOK, io.StringIO())
    }
    assert container.notifications.deliver_due(container.session_factory).sent == 2
    sent = client.get(f"/api/v1/accounts/{world.a.account_id}/messages").json()
    assert {m["rule"] for m in sent} == {"low_balance_amount", "low_balance_days"}
    assert [m["id"] for m in sent] == sorted((m["id"] for m in sent), reverse=True)  # newest first
    for message in sent:
        assert message["status"] == "sent"
        [attempt] = message["deliveries"]
        assert (attempt["attempt"], attempt["outcome"]) == (1, "ok")
    assert len(client.get(f"/api/v1/accounts/{world.a.account_id}/messages", params={"limit": 1}).json()) == 1
