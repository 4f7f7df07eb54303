"""`openami audit generate-key | checkpoint | export-checkpoints | verify` from the command line, and bad input."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from openami.cli.audit import app
from openami.common.clock import ManualClock
from openami.security.audit import AuditLog
from openami.storage.db import unit_of_work


def _log_three(factory: sessionmaker[Session], clock: ManualClock) -> None:
    with unit_of_work(factory) as session:
        for i in range(3):
            AuditLog(clock).append(
                session,
                actor="bob",
                role="admin",
                action="security.user.create",
                object_type="user",
                object_id=str(i),
            )


def test_key_checkpoint_export_and_verify(
    tmp_path: Path,
    sqlite_url: str,
    sqlite_engine: Engine,
    session_factory: sessionmaker[Session],
    clock: ManualClock,
) -> None:
    runner = CliRunner()
    key = tmp_path / "site.pem"
    made = runner.invoke(app, ["generate-key", "--out", str(key)])
    assert made.exit_code == 0, made.output
    public_hex = made.output.strip()
    assert len(public_hex) == 64
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    again = runner.invoke(app, ["generate-key", "--out", str(key)])
    assert again.exit_code == 2
    assert "already exists; refusing to overwrite a key" in again.output

    empty = runner.invoke(app, ["checkpoint", "--key", str(key), "--database-url", sqlite_url])
    assert empty.exit_code == 1
    assert "the audit log is empty" in empty.output
    _log_three(session_factory, clock)
    signed = runner.invoke(app, ["checkpoint", "--key", str(key), "--database-url", sqlite_url])
    assert signed.exit_code == 0, signed.output
    assert "checkpoint #1 signs entry #3" in signed.output

    out = tmp_path / "cps.json"
    export = runner.invoke(app, ["export-checkpoints", "--out", str(out), "--database-url", sqlite_url])
    assert export.exit_code == 0, export.output
    assert [cp["public_key"] for cp in json.loads(out.read_text())["checkpoints"]] == [public_hex]

    verified = runner.invoke(app, ["verify", "--database-url", sqlite_url, "--public-key", public_hex])
    assert verified.exit_code == 0, verified.output
    assert "3 entries, chain intact, last checkpoint #1 (entry #3)" in verified.output
    untrusted = runner.invoke(app, ["verify", "--database-url", sqlite_url, "--public-key", "00" * 32])
    assert untrusted.exit_code == 1
    assert "checkpoint #1 for entry #3 is signed by an untrusted key" in untrusted.output


def test_bad_files_are_refused_with_what_is_wrong(
    tmp_path: Path, sqlite_url: str, sqlite_engine: Engine
) -> None:
    runner = CliRunner()
    bad = tmp_path / "cps.json"
    bad.write_text('{"checkpoints": [{"entry_id": 1}]}')
    result = runner.invoke(app, ["verify", "--database-url", sqlite_url, "--checkpoints", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}, checkpoint 1: entry_hash must be a string, got None" in result.output
    bad.write_text("[1,")
    result = runner.invoke(app, ["verify", "--database-url", sqlite_url, "--checkpoints", str(bad)])
    assert (result.exit_code, f"{bad}: not JSON" in result.output) == (2, True)
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN NOTHING-----\n")
    result = runner.invoke(app, ["checkpoint", "--key", str(key), "--database-url", sqlite_url])
    assert result.exit_code == 2
    assert f"{key}: not an unencrypted PEM private key" in result.output
    result = runner.invoke(
        app, ["checkpoint", "--key", str(tmp_path / "absent.pem"), "--database-url", sqlite_url]
    )
    assert (result.exit_code, "cannot read" in result.output) == (2, True)


def test_verify_of_a_database_without_the_log_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    result = CliRunner().invoke(app, ["verify", "--database-url", url])
    assert result.exit_code == 1
    assert "cannot use the audit log's database" in result.output
