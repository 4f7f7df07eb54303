"""`openami users create-admin` makes the first person who can sign in, with a password and second factor shown
once; `reset-password` gives a new one and ends the person's sessions. Both are in the operation log."""

from __future__ import annotations

from pathlib import Path

import pyotp
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from openami.api.app import create_app
from openami.bootstrap import bootstrap
from openami.cli.main import app
from openami.config import Settings
from openami.security.audit import AuditEntry
from openami.storage import migrate


def _values(output: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in output.splitlines() if ": " in line)


def test_the_first_admin_signs_in_with_what_was_printed_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'users.db'}"
    migrate.upgrade(url)
    container = bootstrap(Settings(database_url=url))
    with container.session_factory() as session, session.begin():
        container.registry.create_site(
            session,
            code="KSM",
            name="Kisumu",
            timezone="Africa/Nairobi",
            currency="KES",
            holiday_country="KE",
        )
    runner = CliRunner()
    made = runner.invoke(
        app, ["users", "create-admin", "--site", "KSM", "--username", "achieng", "--database-url", url]
    )
    assert made.exit_code == 0, made.output
    printed = _values(made.stdout)
    assert len(printed["password"]) >= 16
    client = TestClient(create_app(container), base_url="https://testserver")
    code = pyotp.TOTP(printed["second factor (TOTP) secret"]).now()
    login = client.post(
        "/api/v1/auth/login", json={"username": "achieng", "password": printed["password"], "totp_code": code}
    )
    assert login.status_code == 200, login.text
    assert login.json()["grants"][0]["role"] == "admin"

    again = runner.invoke(
        app, ["users", "create-admin", "--site", "KSM", "--username", "achieng", "--database-url", url]
    )
    assert again.exit_code == 1
    assert "taken" in again.output
    nowhere = runner.invoke(
        app, ["users", "create-admin", "--site", "NOPE", "--username", "other", "--database-url", url]
    )
    assert nowhere.exit_code == 1
    assert "NOPE" in nowhere.output

    reset = runner.invoke(
        app, ["users", "reset-password", "achieng", "--reason", "lost phone and notes", "--database-url", url]
    )
    assert reset.exit_code == 0, reset.output
    assert client.get("/api/v1/auth/me").status_code == 401  # the session ended
    assert _values(reset.stdout)["password"] != printed["password"]
    with container.session_factory() as session:
        actions = [e.action for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert actions == ["users.admin_created", "auth.login", "users.password_reset"]
    container.close()
