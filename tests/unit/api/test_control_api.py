"""Relay control over HTTP: operators queue, repeat and cancel commands; the safety policy refuses a disconnect
with 409, its rule and until when, and the refusal is kept and logged; protections, emergencies and the site's
policy are changed by those allowed to; another site's meters and commands answer 404."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from openami.api.app import create_app
from openami.bootstrap import Container, bootstrap
from openami.common.clock import ManualClock
from openami.config import Settings
from openami.security.audit import AuditEntry
from openami.security.models import Role
from tests.auth_helpers import make_person, token_client
from tests.unit.api.world import World, build_world

# Tuesday 3 March 2026, 10:00 in Nairobi: a working day, by day, no holiday.
WORKDAY = datetime(2026, 3, 3, 7, 0, tzinfo=UTC)


@pytest.fixture
def setup(sqlite_engine: Engine, sqlite_url: str) -> tuple[FastAPI, Container, World, ManualClock]:
    clock = ManualClock(WORKDAY)
    container = bootstrap(Settings(database_url=sqlite_url), clock=clock, engine=sqlite_engine)
    return create_app(container), container, build_world(container), clock


def _operator(app: FastAPI, container: Container, world: World) -> TestClient:
    person = make_person(container, "otieno", [(Role.OPERATOR, world.a.site_id)])
    return token_client(app, container, person, [Role.OPERATOR], [world.a.site_id])


def _entries(container: Container, action: str) -> list[AuditEntry]:
    with container.session_factory() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def test_a_disconnect_is_refused_for_a_protected_account_then_queued_once_unprotected(
    setup: tuple[FastAPI, Container, World, ManualClock],
) -> None:
    app, container, world, _ = setup
    client = _operator(app, container, world)
    url = f"/api/v1/meters/{world.a.serial}/relay-commands"
    body = {"kind": "disconnect", "request_key": "cut-1", "reason": "credit exhausted"}
    refused = client.post(url, json=body)
    assert refused.status_code == 409, refused.text
    answer = refused.json()
    assert (answer["rule"], answer["until"]) == ("protected_account", None)  # medical: no known end
    assert answer["command"]["state"] == "failed"
    assert "protected_account" in answer["detail"]
    [logged] = _entries(container, "control.command.refused")
    assert (logged.actor.split(" ")[0], logged.role, logged.site_id) == (
        "otieno",
        "operator",
        world.a.site_id,
    )
    assert client.post(url, json=body).json()["command"]["id"] == answer["command"]["id"]  # kept, once

    # The protection ends (with a reason, in the operation log); a new request is queued, once per key.
    protection = f"/api/v1/accounts/{world.a.account_id}/supply-protections/{world.a.protection_id}"
    assert client.delete(protection).status_code == 422  # a reason is required
    ended = client.delete(protection, params={"reason": "doctor confirms recovery"})
    assert ended.status_code == 200, ended.text
    assert ended.json()["valid_until"] == "2026-03-03T07:00:00Z"
    assert len(_entries(container, "control.protection.ended")) == 1
    body["request_key"] = "cut-2"
    queued = client.post(url, json=body)
    assert queued.status_code == 202, queued.text
    command = queued.json()
    assert (command["state"], command["kind"], command["serial"]) == ("queued", "disconnect", world.a.serial)
    again = client.post(url, json=body)
    assert (again.status_code, again.json()["id"]) == (202, command["id"])
    # The same key for another kind is a conflict that says nothing of what the key named.
    clash = client.post(url, json=body | {"kind": "reconnect"})
    assert clash.status_code == 409
    assert "meter" not in clash.json()["detail"]
    # The world's queued reconnect was superseded by the newer intent.
    superseded = client.get(f"/api/v1/relay-commands/{world.a.command_id}").json()
    assert superseded["state"] == "cancelled"
    listed = client.get(url).json()
    ids = [c["id"] for c in listed]  # newest first: the world's reconnect and bulk read-now come last
    assert ids[:2] == [command["id"], answer["command"]["id"]]
    assert world.a.command_id in ids[2:]

    cancelled = client.post(
        f"/api/v1/relay-commands/{command['id']}/cancel", json={"reason": "paid at office"}
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    assert len(_entries(container, "control.command.queued")) >= 2


def test_bad_requests_answer_422_and_another_sites_objects_404(
    setup: tuple[FastAPI, Container, World, ManualClock],
) -> None:
    app, container, world, _ = setup
    client = _operator(app, container, world)
    url = f"/api/v1/meters/{world.a.serial}/relay-commands"
    bad_kind = client.post(url, json={"kind": "explode", "request_key": "k", "reason": "r"})
    assert bad_kind.status_code == 422
    assert bad_kind.json()["detail"][0]["loc"] == ["body", "kind"]
    no_reason = client.post(url, json={"kind": "read_now", "request_key": "k", "reason": ""})
    assert no_reason.status_code == 422
    assert no_reason.json()["detail"][0]["loc"] == ["body", "reason"]
    assert (
        client.post(url, json={"kind": "read_now", "request_key": "k" * 81, "reason": "r"}).status_code == 422
    )
    unknown = client.post("/api/v1/meters/NOPE-1/relay-commands", json={"kind": "read_now", "request_key": "k",
                                                                       "reason": "r"})  # fmt: skip
    other = client.post(f"/api/v1/meters/{world.b.serial}/relay-commands",
                        json={"kind": "read_now", "request_key": "k", "reason": "r"})  # fmt: skip
    assert (unknown.status_code, other.status_code) == (404, 404)
    assert other.json()["detail"] == f"no meter with serial {world.b.serial!r}"  # as if it did not exist
    assert client.get(f"/api/v1/relay-commands/{world.b.command_id}").status_code == 404
    assert (
        client.post(f"/api/v1/relay-commands/{world.b.command_id}/cancel", json={"reason": "x"}).status_code
        == 404
    )
    assert client.get(f"/api/v1/relay-bulk-operations/{world.b.bulk_id}").status_code == 404
    assert client.get(f"/api/v1/sites/{world.b.site_id}/control-policy").status_code == 404
    protection = f"/api/v1/accounts/{world.b.account_id}/supply-protections/{world.b.protection_id}"
    assert client.delete(protection, params={"reason": "x"}).status_code == 404
    # A protection of another account named through one's own account: 404 too.
    mixed = f"/api/v1/accounts/{world.a.account_id}/supply-protections/{world.a2.protection_id}"
    assert client.delete(mixed, params={"reason": "x"}).status_code == 404
    emergency = f"/api/v1/sites/{world.b.site_id}/weather-emergencies/{world.b.emergency_id}"
    assert client.delete(emergency, params={"reason": "x"}).status_code == 404
    bulk = f"/api/v1/sites/{world.a.site_id}/relay-commands/bulk"
    base = {"kind": "read_now", "request_key": "b-1", "reason": "survey"}
    foreign = client.post(bulk, json=base | {"serials": [world.a.serial, world.b.serial]})
    assert foreign.status_code == 422
    assert (foreign.json()["location"], world.b.serial in foreign.json()["detail"]) == ("serials", True)
    twice = client.post(bulk, json=base | {"serials": [world.a.serial, world.a.serial]})
    assert (twice.status_code, twice.json()["location"]) == (422, "serials")
    protect = client.post(f"/api/v1/accounts/{world.a.account_id}/supply-protections",
                          json={"kind": "wealthy", "reason": "x"})  # fmt: skip
    assert (protect.status_code, protect.json()["location"]) == (422, "kind")
    backwards = client.post(f"/api/v1/sites/{world.a.site_id}/weather-emergencies",
                            json={"reason": "flood", "ends_at": "2026-03-01T00:00:00Z"})  # fmt: skip
    assert (backwards.status_code, backwards.json()["location"]) == (422, "ends_at")
    naive = client.post(f"/api/v1/sites/{world.a.site_id}/weather-emergencies",
                        json={"reason": "flood", "ends_at": "2026-03-04T00:00:00"})  # fmt: skip
    assert naive.status_code == 422
    # Nothing of site B was touched: no entry in its operation log but the world's.
    with container.session_factory() as session:
        actors = set(session.scalars(select(AuditEntry.actor).where(AuditEntry.site_id == world.b.site_id)))
    assert actors == {"world"}


def test_emergencies_and_nights_refuse_a_bulk_disconnect_and_bulks_can_be_cancelled(
    setup: tuple[FastAPI, Container, World, ManualClock],
) -> None:
    app, container, world, clock = setup
    client = _operator(app, container, world)
    for tenant in (world.a, world.a2):
        url = f"/api/v1/accounts/{tenant.account_id}/supply-protections/{tenant.protection_id}"
        assert client.delete(url, params={"reason": "reviewed"}).status_code == 200
    declared = client.post(f"/api/v1/sites/{world.a.site_id}/weather-emergencies",
                           json={"reason": "cyclone warning", "ends_at": "2026-03-04T00:00:00Z"})  # fmt: skip
    assert declared.status_code == 201, declared.text
    bulk_url = f"/api/v1/sites/{world.a.site_id}/relay-commands/bulk"
    body = {"serials": [world.a.serial, world.a2.serial], "kind": "disconnect", "request_key": "storm-1",
            "reason": "arrears", "per_minute": 1}  # fmt: skip
    refused = client.post(bulk_url, json=body)
    assert refused.status_code == 202, refused.text
    assert (refused.json()["refused"], len(refused.json()["command_ids"])) == (2, 2)
    first = client.get(f"/api/v1/relay-commands/{refused.json()['command_ids'][0]}").json()
    assert (first["refused_rule"], first["refused_until"]) == ("weather_emergency", "2026-03-04T00:00:00Z")
    clock.advance(timedelta(minutes=30))
    ended = client.delete(f"/api/v1/sites/{world.a.site_id}/weather-emergencies/{declared.json()['id']}",
                          params={"reason": "cyclone passed"})  # fmt: skip
    assert (ended.status_code, ended.json()["ends_at"]) == (200, "2026-03-03T07:30:00Z")
    queued = client.post(bulk_url, json=body | {"request_key": "storm-2"})
    assert (queued.status_code, queued.json()["refused"], queued.json()["per_minute"]) == (202, 0, 1)
    bulk_id = queued.json()["id"]
    cancelled = client.post(f"/api/v1/relay-bulk-operations/{bulk_id}/cancel", json={"reason": "stop"})
    assert cancelled.status_code == 200
    assert cancelled.json()["cancelled_at"] is not None
    states = {client.get(f"/api/v1/relay-commands/{i}").json()["state"] for i in queued.json()["command_ids"]}
    assert states == {"cancelled"}
    assert len(_entries(container, "control.bulk.cancelled")) == 1
    # At night (20:00 in Nairobi) a disconnect is refused until 08:00 local, 05:00 UTC.
    clock.set(datetime(2026, 3, 3, 17, 0, tzinfo=UTC))
    night = client.post(f"/api/v1/meters/{world.a.serial}/relay-commands",
                        json={"kind": "disconnect", "request_key": "night-1", "reason": "arrears"})  # fmt: skip
    assert night.status_code == 409
    assert (night.json()["rule"], night.json()["until"]) == ("night", "2026-03-04T05:00:00+00:00")


def test_only_admins_change_the_policy_and_it_is_logged(
    setup: tuple[FastAPI, Container, World, ManualClock],
) -> None:
    app, container, world, _ = setup
    operator = _operator(app, container, world)
    url = f"/api/v1/sites/{world.a.site_id}/control-policy"
    defaults = operator.get(url).json()
    assert (defaults["stored"], defaults["night_start_hour"], defaults["night_end_hour"]) == (False, 17, 8)
    assert operator.put(url, json={"reason": "x", "night_start_hour": 20}).status_code == 403
    admin = make_person(container, "admin-a", [(Role.ADMIN, world.a.site_id)])
    client = token_client(app, container, admin, [Role.ADMIN], [world.a.site_id])
    changed = client.put(url, json={"reason": "evening work allowed", "night_start_hour": 20})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["stored"], changed.json()["night_start_hour"], changed.json()["night_end_hour"]) == (
        True, 20, 8,
    )  # fmt: skip
    [entry] = _entries(container, "control.policy.set")
    assert json.loads(entry.before or "{}")["night_start_hour"] == 17
    assert (entry.actor.split(" ")[0], entry.reason) == ("admin-a", "evening work allowed")
    assert client.put(url, json={"reason": "x", "night_start_hour": 25}).status_code == 422
    assert client.put(url, json={"reason": "x", "max_attempts": None}).json()["location"] == "policy"
    assert client.put(url, json={"night_start_hour": 20}).status_code == 422  # no reason
    assert client.put(f"/api/v1/sites/{world.b.site_id}/control-policy",
                      json={"reason": "x", "night_start_hour": 20}).status_code == 404  # fmt: skip
    assert len(_entries(container, "control.policy.set")) == 1


def test_a_load_limit_is_asked_for_in_watts_and_only_with_a_limit(
    setup: tuple[FastAPI, Container, World, ManualClock],
) -> None:
    app, container, world, _ = setup
    client = _operator(app, container, world)
    url = f"/api/v1/meters/{world.a.serial}/relay-commands"
    body = {"kind": "set_load_limit", "request_key": "limit-1", "reason": "emergency credit: 1 kW"}

    missing = client.post(url, json=body)
    too_much = client.post(url, json=body | {"limit_w": 2_000_000})
    queued = client.post(url, json=body | {"limit_w": 1000})

    assert missing.status_code == 422
    assert missing.json()["location"] == "limit_w"
    assert too_much.status_code == 422
    assert too_much.json()["detail"][0]["loc"] == ["body", "limit_w"]
    assert queued.status_code == 202, queued.text
    assert (queued.json()["kind"], queued.json()["limit_w"], queued.json()["state"]) == (
        "set_load_limit",
        1000,
        "queued",
    )
    again = client.post(url, json=body | {"limit_w": 500})  # the same key for another limit
    assert again.status_code == 409
