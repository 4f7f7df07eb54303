"""`openami keys generate | rotate | seal-legacy | rewrap` from the command line, and bad input."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text, update
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from openami.cli.main import app
from openami.common.clock import ManualClock
from openami.registry.models import Meter
from openami.registry.service import RegistryService
from openami.security.audit import AuditLog
from openami.security.meter_keys import MasterKey, MeterKeyCipher, parse_master_keys
from tests.unit.registry.helpers import KEY, make_tree

GIVEN_KEY = bytes(range(70, 102))
NEW_MASTER = MasterKey("new", bytes(range(200, 232)))


@pytest.fixture
def registry(
    sqlite_engine: Engine,
    session_factory: sessionmaker[Session],
    clock: ManualClock,
    meter_keys: MeterKeyCipher,
) -> RegistryService:
    """A site with meters KSM-0001 and KSM-CHK (both keyed KEY) in the database the commands are pointed at."""
    registry = RegistryService(clock, meter_keys)
    with session_factory() as session, session.begin():
        make_tree(registry, session)
    return registry


def _stored(session_factory: sessionmaker[Session], serial: str) -> bytes:
    with session_factory() as session:
        value = session.scalar(text("SELECT auth_key FROM meter WHERE serial = :s"), {"s": serial})
    return bytes(value)


def _last_audit_entry(session_factory: sessionmaker[Session], clock: ManualClock) -> tuple[str, str, dict]:
    with session_factory() as session:
        entry = AuditLog(clock).entries(session)[-1]
    return entry.action, entry.object_id, json.loads(entry.after or "null")


def test_generate_prints_one_fresh_master_key_entry() -> None:
    runner = CliRunner()
    first, second = runner.invoke(app, ["keys", "generate"]), runner.invoke(app, ["keys", "generate"])
    assert (first.exit_code, second.exit_code) == (0, 0), first.output
    [key] = parse_master_keys(first.stdout, "stdout")
    [other] = parse_master_keys(second.stdout, "stdout")
    assert key.key != other.key
    assert key.key_id.startswith("k")
    assert "losing it loses every meter key" in first.stderr
    named = runner.invoke(app, ["keys", "generate", "--id", "site-2027"])
    assert parse_master_keys(named.stdout, "stdout")[0].key_id == "site-2027"
    bad = runner.invoke(app, ["keys", "generate", "--id", "two words"])
    assert bad.exit_code == 2
    assert "--id: must be 1 to 32 characters" in bad.output


def test_rotate_prints_the_new_key_once_and_stores_it_sealed(
    registry: RegistryService,
    sqlite_url: str,
    session_factory: sessionmaker[Session],
    clock: ManualClock,
    meter_keys: MeterKeyCipher,
) -> None:
    before = datetime.now(UTC)
    result = CliRunner().invoke(
        app, ["keys", "rotate", "KSM-0001", "--grace-hours", "2", "--database-url", sqlite_url]
    )
    after = datetime.now(UTC)
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1  # the key and nothing else: logs go to stderr
    new_key = bytes.fromhex(result.stdout.strip())
    assert result.output.count(new_key.hex()) == 1
    assert "the previous key is accepted until" in result.stderr
    with session_factory() as session:
        meter = registry.meter_by_serial(session, "KSM-0001")
    assert (meter.auth_key, meter.previous_auth_key) == (new_key, KEY)
    assert meter.previous_key_until is not None
    assert before + timedelta(hours=2) <= meter.previous_key_until <= after + timedelta(hours=2)
    stored = _stored(session_factory, "KSM-0001")
    assert new_key not in stored
    assert meter_keys.open("KSM-0001", stored) == new_key
    action, serial, details = _last_audit_entry(session_factory, clock)
    assert (action, serial, details["key"], details["master_key_id"]) == (
        "meter_key.rotate",
        "KSM-0001",
        "generated",
        "test-1",
    )
    assert new_key.hex() not in json.dumps(details)


def test_rotate_provisions_a_given_key_without_printing_it(
    registry: RegistryService, sqlite_url: str, session_factory: sessionmaker[Session]
) -> None:
    runner = CliRunner()
    given = runner.invoke(
        app,
        [
            "keys",
            "rotate",
            "KSM-0001",
            "--key",
            GIVEN_KEY.hex(),
            "--grace-hours",
            "0",
            "--database-url",
            sqlite_url,
        ],
    )
    assert given.exit_code == 0, given.output
    assert given.stdout == ""
    assert "the previous key is refused" in given.stderr
    with session_factory() as session:
        meter = registry.meter_by_serial(session, "KSM-0001")
    assert (meter.auth_key, meter.previous_auth_key) == (GIVEN_KEY, None)
    # From stdin, so that the key stays out of the shell history and the process list.
    piped = runner.invoke(
        app,
        ["keys", "rotate", "KSM-CHK", "--key", "-", "--database-url", sqlite_url],
        input=GIVEN_KEY.hex() + "\n",
    )
    assert piped.exit_code == 0, piped.output
    with session_factory() as session:
        assert registry.meter_by_serial(session, "KSM-CHK").auth_key == GIVEN_KEY


def test_rotate_refuses_bad_input_and_changes_nothing(
    registry: RegistryService, sqlite_url: str, session_factory: sessionmaker[Session]
) -> None:
    runner = CliRunner()
    url = ["--database-url", sqlite_url]
    grace = runner.invoke(app, ["keys", "rotate", "KSM-0001", "--grace-hours", "-1", *url])
    assert grace.exit_code == 2
    assert "--grace-hours: must be between 0 and 2160, got -1" in grace.output
    unknown = runner.invoke(app, ["keys", "rotate", "NOPE-1", *url])
    assert unknown.exit_code == 1
    assert "no meter with serial 'NOPE-1'" in unknown.output
    short = GIVEN_KEY.hex()[:-2]
    bad = runner.invoke(app, ["keys", "rotate", "KSM-0001", "--key", short, *url])
    assert bad.exit_code == 1
    assert "new_key: must be 64 hexadecimal characters" in bad.output
    assert short not in bad.output
    with session_factory() as session:
        assert registry.meter_by_serial(session, "KSM-0001").auth_key == KEY


def test_seal_legacy_then_rewrap_under_a_new_master_key(
    registry: RegistryService,
    sqlite_url: str,
    session_factory: sessionmaker[Session],
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = CliRunner()
    url = ["--database-url", sqlite_url]
    with session_factory() as session, session.begin():
        session.execute(update(Meter).values(auth_key=KEY))  # both meters as before migration 0004
    sealed = runner.invoke(app, ["keys", "seal-legacy", *url])
    assert sealed.exit_code == 0, sealed.output
    assert sealed.stdout == "2 legacy plaintext meter key(s) sealed under master key test-1\n"
    assert _stored(session_factory, "KSM-0001") != KEY
    assert _last_audit_entry(session_factory, clock)[0] == "meter_key.seal_legacy"
    assert runner.invoke(app, ["keys", "seal-legacy", *url]).stdout.startswith("0 legacy")

    monkeypatch.setenv("OPENAMI_MASTER_KEYS", f"{NEW_MASTER.entry()},{os.environ['OPENAMI_MASTER_KEYS']}")
    rewrapped = runner.invoke(app, ["keys", "rewrap", *url])
    assert rewrapped.exit_code == 0, rewrapped.output
    assert rewrapped.stdout.startswith("2 meter(s) re-sealed under master key new")
    assert _last_audit_entry(session_factory, clock)[2] == {"meters": 2, "master_key_id": "new"}
    newest_only = RegistryService(clock, MeterKeyCipher([NEW_MASTER]))
    with session_factory() as session:
        assert {m.auth_key for m in newest_only.meter_infos(session)} == {KEY}


def test_commands_without_a_master_key_in_server_mode_say_what_to_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAMI_MASTER_KEYS")
    url = "postgresql+psycopg://postgres@127.0.0.1:5432/never_connected"
    for command in (["rotate", "KSM-0001"], ["seal-legacy"], ["rewrap"]):
        result = CliRunner().invoke(app, ["keys", *command, "--database-url", url])
        assert result.exit_code == 2, result.output
        assert "set OPENAMI_MASTER_KEYS" in result.output
        assert result.stdout == ""
