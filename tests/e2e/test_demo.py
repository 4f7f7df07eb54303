"""`openami demo --no-serve --json` at a small size: the whole pipeline, and the summary adds up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import holidays
from fastapi.testclient import TestClient
from sqlalchemy import select

from openami.api.app import create_app
from openami.bootstrap import bootstrap
from openami.config import Settings
from openami.control.models import RelayCommand


def test_demo_runs_end_to_end_and_notices_every_injected_fault(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    out = subprocess.run(
        [
            sys.executable, "-m", "openami.cli", "demo", "--meters", "40", "--days", "6", "--seed", "7",
            "--no-serve", "--json", "--database-url", f"sqlite:///{db}",
        ],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)

    assert summary["meters"] == 40
    assert summary["check_meters"] >= 1
    injected = summary["faults_injected"]
    rejected = summary["frames_rejected"]
    # Every duplicate and replay carries a counter already seen; every forgery fails its MAC.
    assert rejected.get("replayed", 0) == injected["duplicated"] + injected["replayed"]
    assert rejected.get("bad_signature", 0) == injected["forged"]
    assert rejected.get("unknown_meter", 0) == injected["unknown_meter"]
    assert summary["frames_accepted"] + sum(rejected.values()) == summary["frames_received"]
    # Nothing an honest meter sent was refused.
    assert set(rejected) <= {"replayed", "bad_signature", "unknown_meter"}
    assert summary["values_rejected"] == {}
    # What was dropped on the way was noticed and recovered; only a meter still out of reach at the end
    # (an outage running past it) may leave a gap open, and then the summary says so.
    assert summary["readings_stored"] > 40 * 6 * 96
    if injected["dropped"]:
        assert summary["gaps_found"] > 0
        assert summary["rereads_requested"] > 0
    assert summary["gaps_still_open"] <= injected["outages"]
    assert summary["completeness_percent"] > 99.0
    assert (tmp_path / "var" / "demo.log").exists()
    # The postpaid half of the accounts is billed from the stored readings, or said why not; the ledger balances.
    assert summary["bills_issued"] > 0
    assert 0 < summary["postpaid_accounts"] < 40
    assert (
        summary["bills_issued"] + sum(summary["accounts_not_billed"].values()) == summary["postpaid_accounts"]
    )
    assert float(summary["billed_total"]) > 0
    assert summary["ledger_balanced"] is True
    # Prepaid customers run low, are warned, are cut off at an allowed time, pay in the sandbox, are reconnected.
    prepaid = summary["prepaid"]
    assert prepaid["prepaid_accounts"] == 40 - summary["postpaid_accounts"]
    assert prepaid["low_balance_warnings"] > 0
    assert 0 < prepaid["disconnects_confirmed"] == prepaid["disconnects_requested"]
    assert prepaid["payments_credited"] == prepaid["payments_made"] > prepaid["prepaid_accounts"]
    assert 0 < prepaid["reconnects_confirmed"] <= prepaid["disconnects_confirmed"]
    assert prepaid["messages_sent"] >= prepaid["low_balance_warnings"] + 2 * prepaid["reconnects_confirmed"]
    # No default password: the demo's people have generated ones, printed this once, and no two alike.
    people = {p["username"]: p for p in summary["people"]}
    assert set(people) == {"admin", "operator", "auditor", "customer"}
    assert len({p["password"] for p in people.values()}) == 4
    assert all(len(p["password"]) >= 16 for p in people.values())
    assert "totp_secret" in people["admin"]
    assert "totp_secret" not in people["customer"]
    container = bootstrap(Settings(database_url=f"sqlite:///{db}"))
    # Every cut-off was sent at an allowed time: a weekday from 08:00 to 17:00 in the site's zone, not a holiday.
    kenya = holidays.country_holidays("KE")
    with container.session_factory() as session:
        cuts = session.scalars(
            select(RelayCommand.last_sent_at).where(
                RelayCommand.kind == "disconnect", RelayCommand.state == "confirmed"
            )
        ).all()
    local = [at.astimezone(ZoneInfo("Africa/Nairobi")) for at in cuts if at is not None]
    assert len(local) == prepaid["disconnects_confirmed"]
    assert all(8 <= t.hour < 17 and t.weekday() < 5 and t.date() not in kenya for t in local), local
    # The customer can sign in and sees their own household, and nothing else of the site.
    client = TestClient(create_app(container), base_url="https://testserver")
    login = {"username": "customer", "password": people["customer"]["password"], "totp_code": None}
    assert client.post("/api/v1/auth/login", json=login).status_code == 200
    assert client.get("/api/v1/meters").status_code == 403
    with container.session_factory() as session:
        meters = container.registry.meter_infos(session)
    seen = [
        m.serial
        for m in meters
        if client.get(f"/api/v1/meters/{m.serial}/readings/instants").status_code == 200
    ]
    assert len(seen) == 1
    container.close()


def test_demo_refuses_nonsense_sizes(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "openami.cli", "demo", "--meters", "0", "--no-serve", "--json"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert "--meters" in out.stderr
