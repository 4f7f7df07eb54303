"""Issuing offline tokens on a SQLite database built by the migrations; the meter side (device.tokens) accepts
what is issued, so these tests prove both ends agree."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import TypedDict

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from openami.common.clock import ManualClock
from openami.common.errors import ConflictError, NotFoundError, ValidationError
from openami.device.tokens import RejectReason, TokenConfig, TokenRegister
from openami.prepayment.tokens import CreditKind, TokenKind, TokenProvisioning, TokenService
from openami.prepayment.tokens_models import OfflineToken, OfflineTokenMeter
from openami.registry.service import RegistryService
from openami.security.audit import AuditEntry
from openami.security.meter_keys import MeterKeyCipher
from openami.storage import migrate
from openami.storage.db import make_engine, make_session_factory
from tests.unit.billing.world import Customer, make_customer, make_site


class _Actor(TypedDict):
    actor: str
    role: str


ACTOR: _Actor = {"actor": "cashier@ksm", "role": "operator"}


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    migrate.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def db(engine: Engine) -> Iterator[Session]:
    with make_session_factory(engine)() as session:
        yield session


@pytest.fixture
def registry(clock: ManualClock, meter_keys: MeterKeyCipher) -> RegistryService:
    return RegistryService(clock, meter_keys)


@pytest.fixture
def tokens(clock: ManualClock, registry: RegistryService, meter_keys: MeterKeyCipher) -> TokenService:
    return TokenService(clock, registry, meter_keys)


@pytest.fixture
def customer(db: Session, registry: RegistryService, tokens: TokenService) -> Customer:
    site = make_site(db, registry)
    tokens.configure_site(db, site_id=site.id, credit_kind="energy", unit_size=100, **ACTOR)
    found = make_customer(db, registry, site, "T1")
    db.commit()
    return found


@pytest.fixture
def provisioned(db: Session, tokens: TokenService, customer: Customer) -> TokenProvisioning:
    config = tokens.provision_meter(db, meter_id=customer.meter.id, **ACTOR)
    db.commit()
    return config


def keypad_for(config: TokenProvisioning) -> TokenRegister:
    return TokenRegister(
        TokenConfig(config.secret_key, config.starting_code, config.credit_kind, config.unit_size)
    )


def audit_actions(db: Session) -> list[str]:
    return list(db.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


def token_rows(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(OfflineToken)) or 0


def test_issued_credit_is_accepted_once_by_the_meter(
    db: Session, tokens: TokenService, customer: Customer, provisioned: TokenProvisioning, clock: ManualClock
) -> None:
    issued = tokens.issue_credit(
        db, meter_id=customer.meter.id, energy_wh=2_500, payment_reference="pay_123", **ACTOR
    )
    db.commit()
    assert (issued.kind, issued.value_units, issued.credit_amount) == (TokenKind.ADD, 25, 2_500)
    assert (issued.count, issued.issued_by, issued.payment_reference) == (2, "cashier@ksm", "pay_123")
    assert issued.issued_at == clock.now()
    keypad = keypad_for(provisioned)
    assert keypad.enter(issued.token, clock.now()).accepted
    assert keypad.credit == 2_500
    assert keypad.enter(issued.token, clock.now()).reason is RejectReason.ALREADY_USED
    assert keypad.credit == 2_500


def test_issuing_records_each_token_and_the_counter_only_goes_up(
    db: Session, tokens: TokenService, customer: Customer, provisioned: TokenProvisioning, clock: ManualClock
) -> None:
    meter_id = customer.meter.id
    made = [
        tokens.issue_credit(db, meter_id=meter_id, energy_wh=100, **ACTOR),
        tokens.issue_credit(db, meter_id=meter_id, energy_wh=99_500, **ACTOR),
        tokens.issue_set(db, meter_id=meter_id, energy_wh=0, **ACTOR),
        tokens.issue_credit(db, meter_id=meter_id, energy_wh=300, **ACTOR),
        tokens.issue_disable(db, meter_id=meter_id, **ACTOR),
    ]
    db.commit()
    assert [t.count for t in made] == [2, 4, 5, 6, 7]
    assert [t.kind for t in made] == [
        TokenKind.ADD,
        TokenKind.ADD,
        TokenKind.SET,
        TokenKind.ADD,
        TokenKind.DISABLE,
    ]
    assert tokens.tokens_for_meter(db, meter_id) == made
    assert db.get(OfflineTokenMeter, meter_id).last_count == 7  # type: ignore[union-attr]
    assert audit_actions(db)[-5:] == [
        "offline_tokens.issue_add",
        "offline_tokens.issue_add",
        "offline_tokens.issue_set",
        "offline_tokens.issue_add",
        "offline_tokens.issue_disable",
    ]
    keypad = keypad_for(provisioned)
    for token in made:
        assert keypad.enter(token.token, clock.now()).accepted
    assert keypad.credit == 300
    assert not keypad.prepayment_enabled


def test_the_audit_entry_names_the_token_but_not_its_digits(
    db: Session, tokens: TokenService, customer: Customer, provisioned: TokenProvisioning
) -> None:
    issued = tokens.issue_credit(db, meter_id=customer.meter.id, energy_wh=700, **ACTOR)
    entry = db.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
    assert entry is not None
    assert entry.object_id == str(customer.meter.id)
    assert '"count":2' in (entry.after or "").replace(" ", "")
    assert issued.token not in (entry.after or "")


def test_another_meters_token_is_refused(
    db: Session,
    tokens: TokenService,
    registry: RegistryService,
    customer: Customer,
    provisioned: TokenProvisioning,
    clock: ManualClock,
) -> None:
    site = registry.get_site(db, customer.meter.site_id)
    neighbour = make_customer(db, registry, site, "T2")
    tokens.provision_meter(db, meter_id=neighbour.meter.id, **ACTOR)
    theirs = tokens.issue_credit(db, meter_id=neighbour.meter.id, energy_wh=5_000, **ACTOR)
    keypad = keypad_for(provisioned)
    assert keypad.enter(theirs.token, clock.now()).reason is RejectReason.INVALID
    assert keypad.credit == 0


def test_money_tokens_carry_minor_units(db: Session, tokens: TokenService, registry: RegistryService) -> None:
    site = make_site(db, registry, code="MNY")
    tokens.configure_site(db, site_id=site.id, credit_kind=CreditKind.MONEY, unit_size=100, **ACTOR)
    meter_id = make_customer(db, registry, site, "M1").meter.id
    config = tokens.provision_meter(db, meter_id=meter_id, **ACTOR)
    issued = tokens.issue_credit(db, meter_id=meter_id, amount_minor=12_300, **ACTOR)
    assert (issued.credit_kind, issued.value_units, issued.credit_amount) == (CreditKind.MONEY, 123, 12_300)
    keypad = keypad_for(config)
    assert keypad.enter(issued.token, site.created_at).accepted
    assert keypad.credit == 12_300
    with pytest.raises(ValidationError, match="carry money: give amount_minor"):
        tokens.issue_credit(db, meter_id=meter_id, energy_wh=100, **ACTOR)


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (0, "positive whole number"),
        (-100, "positive whole number"),
        (None, "positive whole number"),
        (150, "whole multiple"),
        (99_600, "at most 99500"),
        (True, "positive whole number"),
        (100.0, "positive whole number"),
    ],
)
def test_bad_amounts_are_refused_and_nothing_is_recorded(
    db: Session,
    tokens: TokenService,
    customer: Customer,
    provisioned: TokenProvisioning,
    amount: object,
    message: str,
) -> None:
    actions = audit_actions(db)
    with pytest.raises(ValidationError, match=message) as raised:
        tokens.issue_credit(db, meter_id=customer.meter.id, energy_wh=amount, **ACTOR)  # type: ignore[arg-type]
    assert raised.value.location == "energy_wh"
    assert token_rows(db) == 0
    assert audit_actions(db) == actions
    assert db.get(OfflineTokenMeter, customer.meter.id).last_count == 1  # type: ignore[union-attr]


def test_unknown_or_unprovisioned_meters_are_refused(
    db: Session, tokens: TokenService, registry: RegistryService, customer: Customer
) -> None:
    actions = audit_actions(db)
    with pytest.raises(NotFoundError, match="no meter with id 9999"):
        tokens.issue_credit(db, meter_id=9999, energy_wh=100, **ACTOR)
    with pytest.raises(NotFoundError, match="not provisioned for offline tokens"):
        tokens.issue_credit(db, meter_id=customer.meter.id, energy_wh=100, **ACTOR)
    with pytest.raises(NotFoundError, match="no meter with id 9999"):
        tokens.provision_meter(db, meter_id=9999, **ACTOR)
    assert token_rows(db) == 0
    assert audit_actions(db) == actions


def test_a_meter_is_provisioned_once_and_its_key_is_sealed(
    db: Session, tokens: TokenService, customer: Customer, provisioned: TokenProvisioning
) -> None:
    with pytest.raises(ConflictError, match="already provisioned"):
        tokens.provision_meter(db, meter_id=customer.meter.id, **ACTOR)
    row = db.get(OfflineTokenMeter, customer.meter.id)
    assert row is not None
    assert provisioned.secret_key not in row.sealed_key
    assert len(provisioned.secret_key) == 16
    assert tokens.device_config(db, customer.meter.id) == provisioned
    assert "secret_key" not in repr(provisioned)


def test_a_site_without_settings_cannot_provision(
    db: Session, tokens: TokenService, registry: RegistryService
) -> None:
    site = make_site(db, registry, code="NEW")
    meter_id = make_customer(db, registry, site, "N1").meter.id
    with pytest.raises(NotFoundError, match="no offline-token settings"):
        tokens.provision_meter(db, meter_id=meter_id, **ACTOR)
    with pytest.raises(ValidationError, match="one of energy, money"):
        tokens.configure_site(db, site_id=site.id, credit_kind="kwh", unit_size=1, **ACTOR)
    with pytest.raises(ValidationError) as raised:
        tokens.configure_site(db, site_id=site.id, credit_kind="energy", unit_size=0, **ACTOR)
    assert raised.value.location == "unit_size"


def test_tokens_issued_out_of_order_of_entry_still_work(
    db: Session, tokens: TokenService, customer: Customer, provisioned: TokenProvisioning, clock: ManualClock
) -> None:
    made = [
        tokens.issue_credit(db, meter_id=customer.meter.id, energy_wh=100 * n, **ACTOR) for n in (1, 2, 3)
    ]
    keypad = keypad_for(provisioned)
    for token in (made[2], made[0], made[1]):
        clock.advance(timedelta(minutes=1))
        assert keypad.enter(token.token, clock.now()).accepted
    assert keypad.credit == 600
