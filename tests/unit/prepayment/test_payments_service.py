"""The payment service on SQLite built by the migrations: each payment credited once whatever the webhooks do,
refunds and chargebacks reversed, bad deliveries refused and recorded, receipts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from openami.common.clock import ManualClock
from openami.common.errors import NotFoundError, ValidationError
from openami.ledger.interfaces import AccountPurpose
from openami.ledger.service import LedgerService
from openami.prepayment.payments import PaymentInfo, PaymentService, receipt_html
from openami.prepayment.payments_models import PaymentEventRecord
from openami.prepayment.providers import EventKind
from openami.prepayment.providers.sandbox import SandboxProvider
from openami.prepayment.providers.stripe_provider import StripeProvider
from openami.prepayment.providers.wechatpay import WeChatPayProvider
from openami.registry.service import RegistryService
from openami.security.audit import AuditLog
from openami.security.meter_keys import MeterKeyCipher
from openami.storage import migrate
from openami.storage.db import make_engine, make_session_factory
from tests.unit.prepayment.test_payments_providers import (
    APIV3_KEY,
    SERIAL,
    WHSEC,
    FakeNative,
    FakeStripeHTTP,
    stripe_event,
    stripe_signed,
    wechat_signed,
)

SECRET = b"sandbox-test-secret-0123456789"


@dataclass
class World:
    db: Session
    clock: ManualClock
    payments: PaymentService
    sandbox: SandboxProvider
    ledger: LedgerService
    site_id: int
    account_id: int


class Recorder:
    def __init__(self) -> None:
        self.credited: list[str] = []
        self.reversed: list[str] = []

    def payment_credited(self, session: Session, payment: PaymentInfo) -> None:
        self.credited.append(payment.reference)

    def payment_reversed(self, session: Session, payment: PaymentInfo) -> None:
        self.reversed.append(payment.reference)


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    migrate.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def world(engine: Engine, meter_keys: MeterKeyCipher, recorder: Recorder) -> Iterator[World]:
    clock = ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    registry = RegistryService(clock, meter_keys)
    ledger = LedgerService(clock, registry)
    sandbox = SandboxProvider(SECRET, clock, base_url="http://test")
    payments = PaymentService(clock, registry, ledger, [sandbox], observers=[recorder])
    factory: sessionmaker[Session] = make_session_factory(engine)
    with factory() as db:
        site = registry.create_site(
            db, code="KSM", name="Site KSM", timezone="Africa/Nairobi", currency="KES", holiday_country="KE"
        )
        customer = registry.create_customer(db, site_id=site.id, reference="C-1", name="Amina <Otieno>")
        account = registry.create_account(
            db, site_id=site.id, customer_id=customer.id, number="P-1", kind="prepaid"
        )
        db.commit()
        yield World(db, clock, payments, sandbox, ledger, site.id, account.id)


def _checkout(w: World, amount_minor: int = 2_500) -> PaymentInfo:
    started = w.payments.start_checkout(
        w.db,
        account_id=w.account_id,
        amount_minor=amount_minor,
        provider="sandbox",
        actor="amina",
        role="customer",
    )
    assert started.redirect_url.startswith("http://test/api/v1/payments/sandbox/checkout/")
    w.db.commit()
    return started.payment


def _deliver(
    w: World, p: PaymentInfo, kind: EventKind, *, amount: int | None = None, currency: str = "KES"
) -> str:
    assert p.provider_payment_id is not None
    body = w.sandbox.event_body(
        kind, p.provider_payment_id, p.reference, p.amount_minor if amount is None else amount, currency
    )
    result = w.payments.handle_webhook(w.db, "sandbox", w.sandbox.sign(body), body)
    w.db.commit()
    return result.outcome


def _balances(w: World) -> tuple[int, int]:
    """(prepayment account balance, cash/sandbox balance) in minor units."""
    prepayment = w.ledger.open_account(
        w.db, site_id=w.site_id, purpose=AccountPurpose.PREPAYMENT, customer_account_id=w.account_id
    )
    cash = w.ledger.open_account(w.db, site_id=w.site_id, purpose=AccountPurpose.CASH, name="sandbox")
    return w.ledger.balance(w.db, prepayment.id), w.ledger.balance(w.db, cash.id)


def test_a_success_credits_the_account_once_and_issues_a_receipt(world: World, recorder: Recorder) -> None:
    p = _checkout(world)
    assert _deliver(world, p, EventKind.SUCCEEDED) == "applied"
    assert _deliver(world, p, EventKind.SUCCEEDED) == "duplicate"
    assert _deliver(world, p, EventKind.FAILED) == "ignored"  # a late failed attempt changes nothing
    assert _balances(world) == (-2_500, 2_500)
    paid = world.payments.get_payment(world.db, p.id)
    assert paid.status == "succeeded"
    assert paid.credited
    assert recorder.credited == [p.reference]
    journal = world.ledger.get_journal(world.db, paid.journal_id) if paid.journal_id else None
    assert journal is not None
    assert journal.external_reference == f"payment:sandbox:{p.provider_payment_id}"

    receipt = world.payments.receipt(world.db, p.id)
    assert receipt.amount == Decimal("25.00")
    assert receipt.currency == "KES"
    assert receipt.number.startswith("R-KSM-")
    assert receipt.status == "credited"
    page = receipt_html(receipt)
    assert "Amina &lt;Otieno&gt;" in page
    assert "25.00 KES" in page
    assert world.ledger.check(world.db).ok


def test_a_failure_then_a_success_credits_and_a_refund_reverses(world: World, recorder: Recorder) -> None:
    p = _checkout(world)
    assert _deliver(world, p, EventKind.FAILED) == "applied"
    assert world.payments.get_payment(world.db, p.id).status == "failed"
    with pytest.raises(NotFoundError, match="has not been credited"):
        world.payments.receipt(world.db, p.id)
    assert _deliver(world, p, EventKind.SUCCEEDED) == "applied"
    assert _balances(world) == (-2_500, 2_500)
    assert _deliver(world, p, EventKind.REFUNDED) == "applied"
    assert _deliver(world, p, EventKind.REFUNDED) == "duplicate"
    assert _deliver(world, p, EventKind.CHARGEBACK) == "ignored"
    assert _deliver(world, p, EventKind.SUCCEEDED) == "duplicate"
    assert _balances(world) == (0, 0)
    refunded = world.payments.get_payment(world.db, p.id)
    assert refunded.status == "refunded"
    assert not refunded.credited
    assert refunded.reversal_journal_id is not None
    assert recorder.reversed == [p.reference]
    assert world.payments.receipt(world.db, p.id).status == "refunded"
    assert world.ledger.check(world.db).ok


def test_a_chargeback_before_its_success_ends_reversed(world: World) -> None:
    p = _checkout(world, 4_000)
    assert _deliver(world, p, EventKind.CHARGEBACK) == "applied"
    assert _balances(world) == (0, 0)
    assert _deliver(world, p, EventKind.SUCCEEDED) == "applied"
    after = world.payments.get_payment(world.db, p.id)
    assert after.status == "charged_back"
    assert after.journal_id is not None
    assert after.reversal_journal_id is not None
    assert _balances(world) == (0, 0)
    assert world.ledger.check(world.db).ok


@pytest.mark.parametrize(
    ("amount", "currency", "why"), [(2_499, "KES", "amount_mismatch"), (2_500, "USD", "amount_mismatch")]
)
def test_an_amount_or_currency_unlike_the_checkouts_is_refused_and_recorded(
    world: World, amount: int, currency: str, why: str
) -> None:
    p = _checkout(world)
    assert _deliver(world, p, EventKind.SUCCEEDED, amount=amount, currency=currency) == "refused"
    assert _balances(world) == (0, 0)
    assert world.payments.get_payment(world.db, p.id).status == "pending"
    record = world.db.scalars(select(PaymentEventRecord).order_by(PaymentEventRecord.id.desc())).first()
    assert record is not None
    assert record.outcome == "refused"
    assert record.reason.startswith(why)
    assert record.payment_id == p.id
    entries = AuditLog(world.clock).entries(world.db)
    assert entries[-1].action == "payment.webhook_refused"


def test_unknown_payments_and_bad_signatures_are_refused_and_recorded(world: World) -> None:
    body = world.sandbox.event_body(EventKind.SUCCEEDED, "sbx_nobody", "pay-nobody", 100, "KES")
    unknown = world.payments.handle_webhook(world.db, "sandbox", world.sandbox.sign(body), body)
    assert unknown.refused
    assert unknown.reason.startswith("unknown_payment")

    p = _checkout(world)
    assert p.provider_payment_id is not None
    body = world.sandbox.event_body(EventKind.SUCCEEDED, p.provider_payment_id, p.reference, 2_500, "KES")
    forged = SandboxProvider(b"another-secret-0123456789", world.clock).sign(body)
    bad = world.payments.handle_webhook(world.db, "sandbox", forged, body)
    assert bad.refused
    assert bad.reason.startswith("bad_signature")
    stale = world.sandbox.sign(body, int((world.clock.now() - timedelta(minutes=10)).timestamp()))
    assert world.payments.handle_webhook(world.db, "sandbox", stale, body).reason.startswith(
        "stale_timestamp"
    )
    tampered = world.sandbox.sign(body)
    altered = body.replace(b"2500", b"9500")
    assert world.payments.handle_webhook(world.db, "sandbox", tampered, altered).reason.startswith(
        "bad_signature"
    )
    world.db.commit()
    assert _balances(world) == (0, 0)
    outcomes = world.db.scalars(select(PaymentEventRecord.outcome)).all()
    assert outcomes == ["refused"] * 4
    with pytest.raises(NotFoundError, match="no payment provider 'paypal'"):
        world.payments.handle_webhook(world.db, "paypal", {}, b"{}")


def test_checkouts_refuse_bad_amounts_and_foreign_currencies(world: World) -> None:
    for amount in (0, -5, 10**13):
        with pytest.raises(ValidationError, match="amount"):
            world.payments.start_checkout(
                world.db,
                account_id=world.account_id,
                amount_minor=amount,
                provider="sandbox",
                actor="a",
                role="r",
            )
    with pytest.raises(ValidationError, match="is paid in KES"):
        world.payments.start_checkout(
            world.db,
            account_id=world.account_id,
            amount_minor=100,
            provider="sandbox",
            actor="a",
            role="r",
            currency="USD",
        )
    world.db.rollback()
    assert world.db.scalar(select(func.count()).select_from(PaymentEventRecord)) == 0


def test_the_checkout_token_cannot_be_altered(world: World) -> None:
    p = _checkout(world)
    token = world.sandbox.checkout_token(p.provider_payment_id or "", p.reference, 2_500, "KES")
    assert world.sandbox.read_checkout_token(token) == (p.provider_payment_id, p.reference, 2_500, "KES")
    forged = world.sandbox.checkout_token(p.provider_payment_id or "", p.reference, 1, "KES")
    with pytest.raises(ValidationError, match="altered or foreign"):
        world.sandbox.read_checkout_token(forged.split(".")[0] + "." + token.split(".")[1])


# -- deliveries judged at their arrival ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wechat_platform_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _late_payments(w: World, platform_key: rsa.RSAPrivateKey) -> PaymentService:
    """The world's payment service with Stripe and WeChat Pay beside the sandbox (their HTTP clients faked)."""
    stripe_provider = StripeProvider(
        "sk_test_x",
        WHSEC,
        success_url="https://u.test/ok",
        cancel_url="https://u.test/no",
        http_client=FakeStripeHTTP(),
    )
    public_pem = (
        platform_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    wechat = WeChatPayProvider(
        apiv3_key=APIV3_KEY,
        platform_public_key=public_pem,
        platform_serial=SERIAL,
        notify_url="https://u.test/api/v1/payments/webhooks/wechatpay",
        client=FakeNative(200, json.dumps({"code_url": "weixin://wxpay/bizpayurl?pr=abc"})),
    )
    return PaymentService(w.clock, w.payments.registry, w.ledger, [w.sandbox, stripe_provider, wechat])


def _success_signed_at(
    w: World, name: str, p: PaymentInfo, at: datetime, platform_key: rsa.RSAPrivateKey
) -> tuple[dict[str, str], bytes]:
    """The provider's success delivery for checkout `p`, signed at `at`, as the provider would send it."""
    if name == "stripe":
        intent = {
            "id": f"pi_{p.id}",
            "amount": p.amount_minor,
            "amount_received": p.amount_minor,
            "currency": p.currency.lower(),
            "metadata": {"openami_reference": p.reference},
        }
        return stripe_signed(stripe_event("payment_intent.succeeded", intent), at=int(at.timestamp()))
    if name == "wechatpay":
        resource = {
            "out_trade_no": p.reference,
            "transaction_id": f"42000{p.id}",
            "trade_state": "SUCCESS",
            "amount": {"total": p.amount_minor, "currency": p.currency},
        }
        return wechat_signed(platform_key, "TRANSACTION.SUCCESS", resource, at=at)
    assert p.provider_payment_id is not None
    body = w.sandbox.event_body(
        EventKind.SUCCEEDED, p.provider_payment_id, p.reference, p.amount_minor, p.currency
    )
    return w.sandbox.sign(body, int(at.timestamp())), body


def _prepaid_balance(w: World) -> int:
    prepayment = w.ledger.open_account(
        w.db, site_id=w.site_id, purpose=AccountPurpose.PREPAYMENT, customer_account_id=w.account_id
    )
    return w.ledger.balance(w.db, prepayment.id)


@pytest.mark.parametrize("name", ["stripe", "wechatpay", "sandbox"])
def test_a_delivery_is_judged_at_its_arrival_however_late_it_is_processed(
    world: World, name: str, wechat_platform_key: rsa.RSAPrivateKey
) -> None:
    payments = _late_payments(world, wechat_platform_key)
    signed_at = world.clock.now()

    def checkout() -> PaymentInfo:
        started = payments.start_checkout(
            world.db,
            account_id=world.account_id,
            amount_minor=2_500,
            provider=name,
            actor="amina",
            role="customer",
        )
        world.db.commit()
        return started.payment

    on_time, late, unstamped = checkout(), checkout(), checkout()
    # Received 10 s after it was signed, processed an hour later (a worker waiting out a dead one's lease).
    world.clock.advance(timedelta(hours=1))
    headers, body = _success_signed_at(world, name, on_time, signed_at, wechat_platform_key)
    applied = payments.handle_webhook(
        world.db, name, headers, body, received_at=signed_at + timedelta(seconds=10)
    )
    assert (applied.outcome, applied.reason) == ("applied", "credited")
    # Received 10 minutes after it was signed: stale, however soon it is processed.
    headers, body = _success_signed_at(world, name, late, signed_at, wechat_platform_key)
    stale = payments.handle_webhook(
        world.db, name, headers, body, received_at=signed_at + timedelta(minutes=10)
    )
    assert stale.refused
    assert stale.reason.startswith("stale_timestamp")
    # Without a `received_at`, it arrives now: an hour after it was signed.
    headers, body = _success_signed_at(world, name, unstamped, signed_at, wechat_platform_key)
    now = payments.handle_webhook(world.db, name, headers, body)
    assert now.reason.startswith("stale_timestamp")
    world.db.commit()

    assert _prepaid_balance(world) == -2_500
    assert [payments.get_payment(world.db, p.id).status for p in (on_time, late, unstamped)] == [
        "succeeded",
        "pending",
        "pending",
    ]
    records = world.db.scalars(select(PaymentEventRecord).order_by(PaymentEventRecord.id)).all()
    assert [(r.outcome, r.received_at) for r in records] == [
        ("applied", signed_at + timedelta(seconds=10)),
        ("refused", signed_at + timedelta(minutes=10)),
        ("refused", signed_at + timedelta(hours=1)),
    ]


def test_a_naive_arrival_time_is_refused(world: World) -> None:
    p = _checkout(world)
    assert p.provider_payment_id is not None
    body = world.sandbox.event_body(EventKind.SUCCEEDED, p.provider_payment_id, p.reference, 2_500, "KES")
    with pytest.raises(ValidationError, match="received_at: must be timezone-aware"):
        world.payments.handle_webhook(
            world.db,
            "sandbox",
            world.sandbox.sign(body),
            body,
            received_at=world.clock.now().replace(tzinfo=None),
        )
