"""`openami tokens issue` prints a token the meter's keypad accepts, for exactly the credit asked, in the operation
log as `cli:<user>`; credit that is not a whole number of token units, or an unknown meter, is refused with the
option named; `openami tokens list` prints the meter's tokens."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from openami.bootstrap import Container, bootstrap
from openami.cli.main import app
from openami.config import Settings
from openami.device.tokens import TokenConfig, TokenRegister
from openami.security.audit import AuditEntry
from openami.storage import migrate

AT = datetime(2026, 3, 3, 7, 0, tzinfo=UTC)


@dataclass
class Desk:
    url: str
    container: Container
    energy: TokenRegister  # the keypad of meter KSM-E (tokens carry energy, 100 Wh units)
    money: TokenRegister  # the keypad of meter LOS-M (tokens carry money, whole naira)


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    url = f"sqlite:///{tmp_path / 'tokens.db'}"
    migrate.upgrade(url)
    container = bootstrap(Settings(database_url=url))
    registry, tokens, who = container.registry, container.tokens, {"actor": "setup", "role": "test"}
    keypads = []
    with container.session_factory() as session, session.begin():
        for code, currency, zone, country, kind, serial in (
            ("KSM", "KES", "Africa/Nairobi", "KE", "energy", "KSM-E"),
            ("LOS", "NGN", "Africa/Lagos", "NG", "money", "LOS-M"),
        ):
            site = registry.create_site(
                session, code=code, name=code, timezone=zone, currency=currency, holiday_country=country
            )
            tokens.configure_site(session, site_id=site.id, credit_kind=kind, unit_size=100, **who)
            meter = registry.create_meter(
                session, site_id=site.id, serial=serial, model="OA-1P", rated_current_a=60, auth_key=bytes(32)
            )
            config = tokens.provision_meter(session, meter_id=meter.id, **who)
            keypads.append(
                TokenRegister(
                    TokenConfig(config.secret_key, config.starting_code, config.credit_kind, config.unit_size)
                )
            )
    yield Desk(url, container, keypads[0], keypads[1])
    container.close()


def _tokens(desk: Desk, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["tokens", *args, "--database-url", desk.url])
    return result.exit_code, result.stdout, result.stderr


def test_an_issued_token_is_printed_for_reading_out_and_the_meter_takes_it(desk: Desk) -> None:
    code, out, said = _tokens(
        desk, "issue", "--meter", "KSM-E", "--kwh", "2.5", "--payment-reference", "R-77"
    )
    assert code == 0, said
    assert re.fullmatch(r"\d{3} \d{3} \d{3}\n", out), out
    assert "adds 2.500 kWh" in said
    assert desk.energy.enter(out.replace(" ", "").strip(), AT).accepted
    assert desk.energy.credit == 2_500

    code, out, said = _tokens(desk, "issue", "--meter", "LOS-M", "--amount", "300.00")
    assert code == 0, said
    assert "adds 300.00 NGN" in said
    assert desk.money.enter(out.replace(" ", "").strip(), AT).accepted
    assert desk.money.credit == 30_000  # kobo

    with desk.container.session_factory() as session:
        entries = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "offline_tokens.issue_add").order_by(AuditEntry.id)
        ).all()
    assert [(e.actor.startswith("cli:"), e.role) for e in entries] == [(True, "cli"), (True, "cli")]

    code, out, said = _tokens(desk, "list", "--meter", "KSM-E")
    assert code == 0, said
    [line] = out.splitlines()
    assert "2.500 kWh" in line
    assert "paid by R-77" in line
    assert re.search(r"\s2\s+add\s", f" {line}")  # count 2, the first add token


def test_credit_the_meter_cannot_take_exactly_is_refused_naming_the_option(desk: Desk) -> None:
    cases = [
        (["--meter", "KSM-E", "--kwh", "2.55"], "--kwh"),  # not whole 100 Wh units
        (["--meter", "KSM-E", "--kwh", "0.0005"], "not a whole number of Wh"),
        (["--meter", "KSM-E", "--kwh", "many"], "--kwh: not a number"),
        (["--meter", "KSM-E", "--amount", "5"], "--amount"),  # this meter's tokens carry energy
        (["--meter", "LOS-M", "--amount", "12.345"], "--amount"),  # not whole kobo
        (["--meter", "LOS-M", "--amount", "-100"], "--amount"),
        (["--meter", "KSM-E"], "exactly one of --kwh and --amount"),
        (["--meter", "KSM-E", "--kwh", "1", "--amount", "1"], "exactly one of --kwh and --amount"),
        (["--meter", "NOPE", "--kwh", "1"], "no meter with serial 'NOPE'"),
    ]
    for args, expected in cases:
        code, out, said = _tokens(desk, "issue", *args)
        assert (code, out) == (1, ""), args
        assert expected in said.replace("\n", " "), (args, said)
    code, _, said = _tokens(desk, "list", "--meter", "KSM-E")
    assert (code, said.strip()) == (0, "meter KSM-E: no tokens issued")  # nothing refused was issued
