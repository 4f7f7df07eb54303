"""Meter keys in the registry: stored sealed, read back in plaintext, rotated with a grace period, legacy rows."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, text, update
from sqlalchemy.orm import Session, sessionmaker
from structlog.testing import capture_logs

from openami.api.app import create_app
from openami.bootstrap import bootstrap
from openami.common.clock import ManualClock
from openami.common.errors import ConfigurationError, NotFoundError, ValidationError
from openami.config import Settings
from openami.registry.csv_import import import_registry_csv
from openami.registry.models import Meter
from openami.registry.service import RegistryService
from openami.security.meter_keys import MasterKey, MeterKeyCipher, MeterKeyError
from openami.security.models import Role
from tests.auth_helpers import make_person, token_client

from .helpers import KEY, KEY_HEX, Tree, csv_text, make_tree, meter_row, service_point_row, site_row

NEW_KEY = bytes(range(64, 96))
OTHER_KEY = bytes(range(160, 192))
OLD_MASTER = MasterKey("old", bytes(range(100, 132)))
NEW_MASTER = MasterKey("new", bytes(range(200, 232)))


@pytest.fixture
def registry(clock: ManualClock, meter_keys: MeterKeyCipher) -> RegistryService:
    return RegistryService(clock, meter_keys)


@pytest.fixture
def tree(registry: RegistryService, session: Session) -> Tree:
    made = make_tree(registry, session)
    session.commit()
    return made


def _stored(session: Session, serial: str) -> tuple[bytes, bytes | None, Any]:
    """The raw columns, read with SQL past the models."""
    row = session.execute(
        text("SELECT auth_key, previous_auth_key, previous_key_until FROM meter WHERE serial = :s"),
        {"s": serial},
    ).one()
    return bytes(row[0]), None if row[1] is None else bytes(row[1]), row[2]


def _forms(*keys: bytes) -> list[str]:
    """The ways a key could be written down: hex either case, base64, Python repr."""
    return [f for k in keys for f in (k.hex(), k.hex().upper(), base64.b64encode(k).decode(), repr(k)[2:-1])]


def test_created_meters_store_their_key_sealed(
    tree: Tree, session: Session, meter_keys: MeterKeyCipher
) -> None:
    for serial in ("KSM-0001", "KSM-CHK"):  # given as hex and as bytes
        stored, previous, until = _stored(session, serial)
        assert KEY not in stored
        assert KEY_HEX.encode() not in stored
        assert meter_keys.open(serial, stored) == KEY
        assert (previous, until) == (None, None)
    assert tree.meter.auth_key == KEY
    assert tree.meter.previous_auth_key is None


def test_csv_import_stores_keys_sealed(
    tmp_path: Path, session_factory: sessionmaker[Session], clock: ManualClock, meter_keys: MeterKeyCipher
) -> None:
    path = tmp_path / "r.csv"
    path.write_text(
        csv_text([site_row("KSM"), service_point_row("SP-1"), meter_row("M-1", service_point="SP-1")])
    )
    import_registry_csv(session_factory, path, clock, meter_keys)
    with session_factory() as session:
        stored, _, _ = _stored(session, "M-1")
        assert KEY not in stored
        assert meter_keys.open("M-1", stored) == KEY
        assert RegistryService(clock, meter_keys).meter_by_serial(session, "M-1").auth_key == KEY


def test_a_sealed_key_copied_to_another_meter_does_not_open(
    tree: Tree, registry: RegistryService, session: Session
) -> None:
    stored, _, _ = _stored(session, "KSM-CHK")
    session.execute(update(Meter).where(Meter.serial == "KSM-0001").values(auth_key=stored))
    with pytest.raises(MeterKeyError, match=r"^meter 'KSM-0001': its sealed key does not open"):
        registry.meter_by_serial(session, "KSM-0001")


def test_a_registry_without_a_cipher_reads_legacy_keys_and_refuses_sealed_ones(
    tree: Tree, session: Session, clock: ManualClock
) -> None:
    bare = RegistryService(clock)
    assert bare.get_site(session, tree.site_id).code == "KSM"
    with pytest.raises(
        ConfigurationError, match="meter 'KSM-0001': this RegistryService has no MeterKeyCipher"
    ):
        bare.meter_by_serial(session, "KSM-0001")
    session.execute(update(Meter).where(Meter.serial == "KSM-0001").values(auth_key=OTHER_KEY))
    assert bare.meter_by_serial(session, "KSM-0001").auth_key == OTHER_KEY
    with pytest.raises(ConfigurationError, match="no MeterKeyCipher"):
        bare.create_meter(
            session, site_id=tree.site_id, serial="KSM-0002", model="x", rated_current_a=60, auth_key=KEY
        )


# --- rotation -------------------------------------------------------------------------------------------------


def test_rotation_keeps_the_old_key_until_the_grace_deadline(
    tree: Tree, registry: RegistryService, session: Session, clock: ManualClock, meter_keys: MeterKeyCipher
) -> None:
    rotated = registry.rotate_meter_key(session, "KSM-0001", NEW_KEY.hex(), timedelta(hours=6))
    session.commit()
    deadline = clock.now() + timedelta(hours=6)
    assert (rotated.auth_key, rotated.previous_auth_key, rotated.previous_key_until) == (
        NEW_KEY,
        KEY,
        deadline,
    )
    stored, previous, _ = _stored(session, "KSM-0001")
    assert previous is not None
    assert KEY not in previous
    assert NEW_KEY not in stored
    assert (meter_keys.open("KSM-0001", stored), meter_keys.open("KSM-0001", previous)) == (NEW_KEY, KEY)
    assert [f for f in _forms(KEY, NEW_KEY) if f in repr(rotated)] == []

    clock.advance(timedelta(hours=6) - timedelta(microseconds=1))
    assert registry.meter_by_serial(session, "KSM-0001").previous_auth_key == KEY
    clock.advance(timedelta(microseconds=1))
    after = registry.meter_by_serial(session, "KSM-0001")
    assert (after.auth_key, after.previous_auth_key, after.previous_key_until) == (NEW_KEY, None, None)


def test_a_second_rotation_replaces_the_previous_key_and_grace_zero_keeps_none(
    tree: Tree, registry: RegistryService, session: Session
) -> None:
    registry.rotate_meter_key(session, "KSM-0001", NEW_KEY, timedelta(days=1))
    again = registry.rotate_meter_key(session, "KSM-0001", OTHER_KEY, timedelta(days=1))
    assert (again.auth_key, again.previous_auth_key) == (OTHER_KEY, NEW_KEY)
    at_once = registry.rotate_meter_key(session, "KSM-0001", KEY, timedelta(0))
    assert (at_once.auth_key, at_once.previous_auth_key, at_once.previous_key_until) == (KEY, None, None)
    assert _stored(session, "KSM-0001")[1:] == (None, None)


def test_rotation_validates_like_creation(tree: Tree, registry: RegistryService, session: Session) -> None:
    with pytest.raises(ValidationError, match="must be 64 hexadecimal characters") as caught:
        registry.rotate_meter_key(session, "KSM-0001", NEW_KEY.hex()[:-2], timedelta(hours=1))
    assert caught.value.location == "new_key"
    assert NEW_KEY.hex()[:-2] not in str(caught.value)
    with pytest.raises(ValidationError, match="is the meter's current key"):
        registry.rotate_meter_key(session, "KSM-0001", KEY, timedelta(hours=1))
    for grace in (timedelta(seconds=-1), timedelta(days=91)):
        with pytest.raises(ValidationError, match="must be between 0 and 90 days") as bad_grace:
            registry.rotate_meter_key(session, "KSM-0001", NEW_KEY, grace)
        assert bad_grace.value.location == "grace"
    with pytest.raises(NotFoundError, match="no meter with serial 'NOPE'"):
        registry.rotate_meter_key(session, "NOPE", NEW_KEY, timedelta(hours=1))
    assert registry.meter_by_serial(session, "KSM-0001").auth_key == KEY  # nothing changed


def test_a_key_that_no_longer_opens_is_replaced_only_without_grace(
    tree: Tree, registry: RegistryService, session: Session
) -> None:
    stored, _, _ = _stored(session, "KSM-CHK")
    session.execute(update(Meter).where(Meter.serial == "KSM-0001").values(auth_key=stored))
    with pytest.raises(MeterKeyError, match="rotate with a grace of 0"):
        registry.rotate_meter_key(session, "KSM-0001", NEW_KEY, timedelta(hours=1))
    replaced = registry.rotate_meter_key(session, "KSM-0001", NEW_KEY, timedelta(0))
    assert (replaced.auth_key, replaced.previous_auth_key) == (NEW_KEY, None)


# --- legacy plaintext keys and master key rotation ------------------------------------------------------------


def test_legacy_plaintext_keys_are_read_and_sealed_by_seal_legacy(
    tree: Tree, registry: RegistryService, session: Session, meter_keys: MeterKeyCipher
) -> None:
    # As migration 0004 leaves a row written before it: the bare 32-byte key.
    session.execute(update(Meter).where(Meter.serial == "KSM-0001").values(auth_key=OTHER_KEY))
    session.execute(update(Meter).where(Meter.serial == "KSM-CHK").values(auth_key=NEW_KEY))
    assert registry.meter_by_serial(session, "KSM-0001").auth_key == OTHER_KEY
    assert registry.seal_legacy_keys(session) == 2
    for serial, key in (("KSM-0001", OTHER_KEY), ("KSM-CHK", NEW_KEY)):
        stored, _, _ = _stored(session, serial)
        assert key not in stored
        assert meter_keys.open(serial, stored) == key
        assert registry.meter_by_serial(session, serial).auth_key == key
    assert registry.seal_legacy_keys(session) == 0


def test_rewrap_reseals_under_the_newest_master_key_and_drops_retired_previous_keys(
    session: Session, clock: ManualClock
) -> None:
    old = RegistryService(clock, MeterKeyCipher([OLD_MASTER]))
    tree = make_tree(old, session)
    old.rotate_meter_key(session, "KSM-0001", NEW_KEY, timedelta(hours=1))  # previous key: KEY until +1 h
    old.rotate_meter_key(session, "KSM-CHK", NEW_KEY, timedelta(days=2))
    session.execute(update(Meter).where(Meter.serial == "KSM-CHK").values(auth_key=OTHER_KEY))  # legacy
    clock.advance(timedelta(hours=2))
    held = session.scalars(select(Meter).order_by(Meter.id)).all()  # loaded, as a caller may hold them
    both = RegistryService(clock, MeterKeyCipher([NEW_MASTER, OLD_MASTER]))
    assert both.rewrap_keys(session) == 2
    assert both.rewrap_keys(session) == 0
    newest_only = RegistryService(clock, MeterKeyCipher([NEW_MASTER]))
    meter = newest_only.meter_by_serial(session, "KSM-0001")
    assert (meter.auth_key, meter.previous_auth_key) == (NEW_KEY, None)
    assert _stored(session, "KSM-0001")[1:] == (None, None)  # its grace was over: dropped
    check = newest_only.meter_by_serial(session, tree.check_meter.serial)
    assert (check.auth_key, check.previous_auth_key) == (OTHER_KEY, KEY)  # still in grace: re-sealed
    assert all(m.auth_key == _stored(session, m.serial)[0] for m in held)  # the session reloaded them


def test_rewrap_names_a_meter_whose_key_does_not_open(session: Session, clock: ManualClock) -> None:
    make_tree(RegistryService(clock, MeterKeyCipher([OLD_MASTER])), session)
    stored, _, _ = _stored(session, "KSM-CHK")
    session.execute(update(Meter).where(Meter.serial == "KSM-0001").values(auth_key=stored))
    both = RegistryService(clock, MeterKeyCipher([NEW_MASTER, OLD_MASTER]))
    with pytest.raises(MeterKeyError, match=r"^meter 'KSM-0001': its sealed key does not open"):
        both.rewrap_keys(session)


# --- no key in logs or API responses --------------------------------------------------------------------------


def test_no_key_appears_in_any_log_line(session: Session, clock: ManualClock) -> None:
    registry = RegistryService(clock, MeterKeyCipher([OLD_MASTER]))
    with capture_logs() as logs:
        tree = make_tree(registry, session)
        registry.rotate_meter_key(session, tree.meter.serial, NEW_KEY, timedelta(hours=1))
        session.execute(update(Meter).where(Meter.serial == "KSM-CHK").values(auth_key=OTHER_KEY))
        registry.seal_legacy_keys(session)
        RegistryService(clock, MeterKeyCipher([NEW_MASTER, OLD_MASTER])).rewrap_keys(session)
        stored, previous, _ = _stored(session, tree.meter.serial)
        session.execute(update(Meter).where(Meter.serial == "KSM-CHK").values(auth_key=stored))
        with pytest.raises(MeterKeyError):
            registry.rotate_meter_key(session, "KSM-CHK", KEY, timedelta(hours=1))
    events = [e["event"] for e in logs]
    assert events.count("meter_key_rotated") == 1
    assert events.count("meter_keys_resealed") == 2  # the capture saw the key work
    secrets = _forms(KEY, NEW_KEY, OTHER_KEY, OLD_MASTER.key, NEW_MASTER.key, stored, previous or b"")
    assert [f for f in secrets if f in str(logs)] == []


@pytest.fixture
def api(
    sqlite_engine: Engine, sqlite_url: str, clock: ManualClock, meter_keys: MeterKeyCipher
) -> Iterator[tuple[TestClient, Tree]]:
    container = bootstrap(
        Settings(database_url=sqlite_url), clock=clock, engine=sqlite_engine, meter_keys=meter_keys
    )
    with container.session_factory() as session, session.begin():
        tree = make_tree(container.registry, session)
        container.registry.rotate_meter_key(session, tree.meter.serial, NEW_KEY, timedelta(hours=1))
    admin = make_person(container, "keeper", [(Role.ADMIN, tree.site_id)])
    app = create_app(container)
    with token_client(app, container, admin, [Role.ADMIN], [tree.site_id]) as client:
        yield client, tree


def test_no_key_appears_in_any_api_response(api: tuple[TestClient, Tree], session: Session) -> None:
    client, tree = api
    stored, previous, _ = _stored(session, tree.meter.serial)
    responses = [
        client.get("/api/v1/meters"),
        client.get(f"/api/v1/meters?site_id={tree.site_id}"),
        client.get(f"/api/v1/meters/{tree.meter.serial}"),
        client.get(f"/api/v1/meters/{tree.check_meter.serial}"),
        client.post(
            "/api/v1/meters",
            json={
                "site_id": tree.site_id,
                "serial": "KSM-0009",
                "model": "x",
                "rated_current_a": 60,
                "auth_key": OTHER_KEY.hex(),
            },
        ),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 201]
    assert responses[2].json()["serial"] == tree.meter.serial
    for response in responses:
        body = response.text
        assert [f for f in _forms(KEY, NEW_KEY, OTHER_KEY, stored, previous or b"") if f in body] == []
        assert "auth_key" not in body
