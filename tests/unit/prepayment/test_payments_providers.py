"""Stripe, WeChat Pay and sandbox adapters against deliveries signed locally exactly as each provider documents,
each delivery's signed timestamp judged against its arrival (`received_at`), never the machine's clock."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import stripe
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from openami.bootstrap import payment_providers
from openami.common.clock import ManualClock
from openami.common.errors import ConfigurationError, ConflictError
from openami.config import Settings
from openami.prepayment.providers import CheckoutRequest, EventKind, WebhookRefused
from openami.prepayment.providers.sandbox import SandboxProvider
from openami.prepayment.providers.stripe_provider import StripeProvider
from openami.prepayment.providers.wechatpay import WeChatPayProvider

WHSEC = "whsec_test_0123456789abcdef"
APIV3_KEY = "0123456789abcdef0123456789abcdef"
SERIAL = "5157F09EFDC096DE15EBE81A47057A72"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # when the test deliveries are signed
ARRIVED = NOW + timedelta(seconds=10)  # when they are received


# -- Stripe -----------------------------------------------------------------------------------------------------


def stripe_signed(
    payload: dict[str, Any], secret: str = WHSEC, at: int | None = None
) -> tuple[dict[str, str], bytes]:
    """Stripe's scheme: v1 = hex HMAC-SHA256(secret, "<t>.<body>"), header "t=<t>,v1=<sig>"."""
    body = json.dumps(payload).encode()
    t = int(NOW.timestamp()) if at is None else at
    sig = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={t},v1={sig}"}, body


def stripe_event(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"id": "evt_1", "object": "event", "type": kind, "data": {"object": obj}}


class FakeStripeHTTP(stripe.HTTPClient):
    """Answers the Checkout Session create call as Stripe would; records what was sent."""

    name = "fake"

    def __init__(self, status: int = 200) -> None:
        super().__init__()
        self.status = status
        self.sent: list[tuple[str, str, Any]] = []

    def request(
        self, method: str, url: str, headers: Any, post_data: Any = None, *, _usage: Any = None
    ) -> Any:
        self.sent.append((method, url, post_data))
        if self.status != 200:
            return (
                json.dumps({"error": {"message": "Invalid currency", "type": "invalid_request_error"}}),
                400,
                {},
            )
        answer = {
            "id": "cs_test_1",
            "object": "checkout.session",
            "url": "https://checkout.stripe.test/cs_test_1",
            "payment_intent": None,
        }
        return json.dumps(answer), 200, {}

    def close(self) -> None:
        return None


def _stripe(http: FakeStripeHTTP | None = None) -> StripeProvider:
    return StripeProvider(
        "sk_test_x", WHSEC, success_url="https://u.test/ok", cancel_url="https://u.test/no", http_client=http
    )


def test_stripe_events_are_verified_and_normalised() -> None:
    provider = _stripe()
    intent = {
        "id": "pi_1",
        "amount": 2500,
        "amount_received": 2500,
        "currency": "kes",
        "metadata": {"openami_reference": "pay-1"},
    }
    event = provider.parse_webhook(
        *stripe_signed(stripe_event("payment_intent.succeeded", intent)), received_at=ARRIVED
    )
    assert event is not None
    assert (event.kind, event.provider_payment_id, event.reference, event.amount_minor, event.currency) == (
        EventKind.SUCCEEDED,
        "pi_1",
        "pay-1",
        2500,
        "KES",
    )
    charge = {
        "id": "ch_1",
        "payment_intent": "pi_1",
        "amount_refunded": 2500,
        "currency": "kes",
        "metadata": {"openami_reference": "pay-1"},
    }
    refund = provider.parse_webhook(
        *stripe_signed(stripe_event("charge.refunded", charge)), received_at=ARRIVED
    )
    assert refund is not None
    assert refund.kind is EventKind.REFUNDED
    dispute = {
        "id": "dp_1",
        "payment_intent": "pi_1",
        "amount": 2500,
        "currency": "kes",
        "reason": "fraudulent",
    }
    chargeback = provider.parse_webhook(
        *stripe_signed(stripe_event("charge.dispute.created", dispute)), received_at=ARRIVED
    )
    assert chargeback is not None
    assert (chargeback.kind, chargeback.reference) == (EventKind.CHARGEBACK, None)
    assert (
        provider.parse_webhook(
            *stripe_signed(stripe_event("customer.created", {"id": "cus_1"})), received_at=ARRIVED
        )
        is None
    )


def test_stripe_refuses_forged_stale_and_unsigned_deliveries() -> None:
    provider = _stripe()
    payload = stripe_event("payment_intent.succeeded", {"id": "pi_1"})
    with pytest.raises(WebhookRefused) as forged:
        provider.parse_webhook(*stripe_signed(payload, secret="whsec_other"), received_at=ARRIVED)
    assert forged.value.reason == "bad_signature"
    with pytest.raises(WebhookRefused) as stale:
        provider.parse_webhook(*stripe_signed(payload, at=int(NOW.timestamp()) - 3600), received_at=ARRIVED)
    assert stale.value.reason == "stale_timestamp"
    headers, body = stripe_signed(payload)
    with pytest.raises(WebhookRefused) as altered:
        provider.parse_webhook(headers, body.replace(b"pi_1", b"pi_2"), received_at=ARRIVED)
    assert altered.value.reason == "bad_signature"
    with pytest.raises(WebhookRefused) as unsigned:
        provider.parse_webhook({}, body, received_at=ARRIVED)
    assert unsigned.value.reason == "missing_signature"


def test_stripe_checkout_sends_the_reference_and_translates_errors() -> None:
    http = FakeStripeHTTP()
    checkout = _stripe(http).start_checkout(CheckoutRequest(2500, "KES", 7, "pay-1", "top-up"))
    assert checkout.redirect_url == "https://checkout.stripe.test/cs_test_1"
    assert checkout.checkout_id == "cs_test_1"
    ((_, url, sent),) = http.sent
    assert url.endswith("/v1/checkout/sessions")
    assert "payment_intent_data[metadata][openami_reference]=pay-1" in str(sent).replace("%5B", "[").replace(
        "%5D", "]"
    )
    with pytest.raises(ConflictError, match="stripe refused the checkout for pay-1"):
        _stripe(FakeStripeHTTP(400)).start_checkout(CheckoutRequest(2500, "KES", 7, "pay-1", "top-up"))


# -- WeChat Pay -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def platform_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def wechat_signed(
    key: rsa.RSAPrivateKey,
    event_type: str,
    resource: dict[str, Any],
    *,
    at: datetime = NOW,
    apiv3_key: str = APIV3_KEY,
    serial: str = SERIAL,
) -> tuple[dict[str, str], bytes]:
    """WeChat Pay's scheme: resource AES-256-GCM with the API v3 key; RSA-SHA256 over "ts\\nnonce\\nbody\\n"."""
    nonce = os.urandom(6).hex()  # 12 characters, used as bytes
    sealed = AESGCM(apiv3_key.encode()).encrypt(nonce.encode(), json.dumps(resource).encode(), b"transaction")
    body = json.dumps(
        {
            "id": "EV-1",
            "create_time": "2026-03-02T17:00:00+08:00",
            "event_type": event_type,
            "resource_type": "encrypt-resource",
            "summary": "ok",
            "resource": {
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(sealed).decode(),
                "associated_data": "transaction",
                "nonce": nonce,
                "original_type": "transaction",
            },
        }
    ).encode()
    ts, header_nonce = str(int(at.timestamp())), "n0nce42"
    signature = key.sign(
        f"{ts}\n{header_nonce}\n{body.decode()}\n".encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    headers = {
        "Wechatpay-Timestamp": ts,
        "Wechatpay-Nonce": header_nonce,
        "Wechatpay-Serial": serial,
        "Wechatpay-Signature": base64.b64encode(signature).decode(),
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
    }
    return headers, body


def _wechat(key: rsa.RSAPrivateKey, client: Any = None) -> WeChatPayProvider:
    return WeChatPayProvider(
        apiv3_key=APIV3_KEY,
        platform_public_key=_public_pem(key),
        platform_serial=SERIAL,
        notify_url="https://u.test/api/v1/payments/webhooks/wechatpay",
        client=client,
    )


PAID = {
    "out_trade_no": "pay-9",
    "transaction_id": "4200000001",
    "trade_state": "SUCCESS",
    "amount": {"total": 1000, "payer_total": 1000, "currency": "CNY", "payer_currency": "CNY"},
}


def test_wechat_notifications_are_verified_decrypted_and_normalised(platform_key: rsa.RSAPrivateKey) -> None:
    provider = _wechat(platform_key)
    event = provider.parse_webhook(
        *wechat_signed(platform_key, "TRANSACTION.SUCCESS", PAID), received_at=ARRIVED
    )
    assert event is not None
    assert (event.kind, event.provider_payment_id, event.reference, event.amount_minor, event.currency) == (
        EventKind.SUCCEEDED,
        "4200000001",
        "pay-9",
        1000,
        "CNY",
    )
    refund = {
        "out_trade_no": "pay-9",
        "transaction_id": "4200000001",
        "refund_id": "5030",
        "refund_status": "SUCCESS",
        "amount": {"total": 1000, "refund": 1000, "payer_total": 1000, "payer_refund": 1000},
    }
    refunded = provider.parse_webhook(
        *wechat_signed(platform_key, "REFUND.SUCCESS", refund), received_at=ARRIVED
    )
    assert refunded is not None
    assert (refunded.kind, refunded.amount_minor, refunded.currency) == (EventKind.REFUNDED, 1000, "CNY")
    closed = {**refund, "refund_status": "CLOSED"}
    assert (
        provider.parse_webhook(*wechat_signed(platform_key, "REFUND.CLOSED", closed), received_at=ARRIVED)
        is None
    )


def test_wechat_refuses_forged_stale_foreign_and_undecryptable_notices(
    platform_key: rsa.RSAPrivateKey,
) -> None:
    provider = _wechat(platform_key)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = {
        "bad_signature": wechat_signed(other, "TRANSACTION.SUCCESS", PAID),
        "stale_timestamp": wechat_signed(platform_key, "TRANSACTION.SUCCESS", PAID, at=NOW.replace(hour=8)),
        "unknown_key": wechat_signed(platform_key, "TRANSACTION.SUCCESS", PAID, serial="00AA"),
        "undecryptable": wechat_signed(platform_key, "TRANSACTION.SUCCESS", PAID, apiv3_key="f" * 32),
    }
    for reason, (headers, body) in cases.items():
        with pytest.raises(WebhookRefused) as refused:
            provider.parse_webhook(headers, body, received_at=ARRIVED)
        assert refused.value.reason == reason
    headers, body = wechat_signed(platform_key, "TRANSACTION.SUCCESS", PAID)
    with pytest.raises(WebhookRefused) as altered:
        provider.parse_webhook(headers, body.replace(b"ok", b"OK"), received_at=ARRIVED)
    assert altered.value.reason == "bad_signature"
    with pytest.raises(WebhookRefused) as missing:
        provider.parse_webhook(
            {k: v for k, v in headers.items() if k != "Wechatpay-Signature"}, body, received_at=ARRIVED
        )
    assert missing.value.reason == "missing_signature"


class FakeNative:
    def __init__(self, code: int, text: str) -> None:
        self.answer = (code, text)
        self.calls: list[dict[str, Any]] = []

    def pay(
        self, description: str, out_trade_no: str, amount: dict[str, Any], **kwargs: Any
    ) -> tuple[int, str]:
        self.calls.append({"out_trade_no": out_trade_no, "amount": amount, **kwargs})
        return self.answer


def test_wechat_checkout_opens_a_native_code_and_translates_refusals(platform_key: rsa.RSAPrivateKey) -> None:
    client = FakeNative(200, json.dumps({"code_url": "weixin://wxpay/bizpayurl?pr=abc"}))
    checkout = _wechat(platform_key, client).start_checkout(
        CheckoutRequest(1000, "CNY", 3, "pay-9", "top-up")
    )
    assert checkout.redirect_url == "weixin://wxpay/bizpayurl?pr=abc"
    assert client.calls[0]["out_trade_no"] == "pay-9"
    assert client.calls[0]["amount"] == {"total": 1000, "currency": "CNY"}
    refusing = FakeNative(400, '{"code":"PARAM_ERROR","message":"bad amount"}')
    with pytest.raises(ConflictError, match="wechat pay refused the checkout for pay-9: 400"):
        _wechat(platform_key, refusing).start_checkout(CheckoutRequest(1000, "CNY", 3, "pay-9", "top-up"))


# -- the time window, judged at arrival ---------------------------------------------------------------------------

SANDBOX_SECRET = b"sandbox-test-secret-0123456789"


def _signed_delivery(name: str, key: rsa.RSAPrivateKey, at: datetime) -> tuple[Any, dict[str, str], bytes]:
    """(provider, headers, body): a payment success signed by `name` at `at`."""
    if name == "stripe":
        headers, body = stripe_signed(
            stripe_event("payment_intent.succeeded", PAID_INTENT), at=int(at.timestamp())
        )
        return _stripe(), headers, body
    if name == "wechatpay":
        headers, body = wechat_signed(key, "TRANSACTION.SUCCESS", PAID, at=at)
        return _wechat(key), headers, body
    # The sandbox's clock only stamps what it signs; here the timestamp is given.
    sandbox = SandboxProvider(SANDBOX_SECRET, ManualClock(NOW + timedelta(days=30)))
    body = sandbox.event_body(EventKind.SUCCEEDED, "sbx_1", "pay-1", 2500, "KES")
    return sandbox, sandbox.sign(body, int(at.timestamp())), body


@pytest.mark.parametrize("name", ["stripe", "wechatpay", "sandbox"])
def test_the_time_window_is_judged_at_arrival_not_at_processing(
    name: str, platform_key: rsa.RSAPrivateKey
) -> None:
    # Signed long ago by the machine's clock (2020): only `received_at` can make it fresh, so a check against
    # the wall clock (Stripe's library's own) would refuse it.
    signed = datetime(2020, 1, 6, 12, 0, tzinfo=UTC)
    provider, headers, body = _signed_delivery(name, platform_key, signed)
    event = provider.parse_webhook(headers, body, received_at=signed + timedelta(seconds=10))
    assert event is not None
    assert event.kind is EventKind.SUCCEEDED
    # At the edge of the 300 s window it is still accepted; one second past it, refused.
    assert provider.parse_webhook(headers, body, received_at=signed + timedelta(seconds=300)) is not None
    for late in (timedelta(seconds=301), timedelta(minutes=10), timedelta(hours=1)):
        with pytest.raises(WebhookRefused) as stale:
            provider.parse_webhook(headers, body, received_at=signed + late)
        assert stale.value.reason == "stale_timestamp"
        assert f"received at {(signed + late).isoformat()}" in stale.value.message


@pytest.mark.parametrize("name", ["wechatpay", "sandbox"])
def test_a_delivery_signed_long_after_its_arrival_is_refused(
    name: str, platform_key: rsa.RSAPrivateKey
) -> None:
    provider, headers, body = _signed_delivery(name, platform_key, NOW)
    with pytest.raises(WebhookRefused) as ahead:
        provider.parse_webhook(headers, body, received_at=NOW - timedelta(minutes=10))
    assert ahead.value.reason == "stale_timestamp"
    assert "after it was received" in ahead.value.message


def test_stripe_accepts_any_matching_v1_signature_and_a_timestamp_ahead_as_its_library_does() -> None:
    provider = _stripe()
    headers, body = stripe_signed(stripe_event("payment_intent.succeeded", PAID_INTENT))
    t, v1 = headers["Stripe-Signature"].split(",")
    # A secret being rolled: Stripe signs with both, one of them ours.
    rolled = {"Stripe-Signature": f"{t},v1={'0' * 64},{v1},v0=legacy"}
    assert provider.parse_webhook(rolled, body, received_at=ARRIVED) is not None
    # Stripe's clock ahead of ours: its library refuses only old timestamps, and so does the adapter.
    assert provider.parse_webhook(headers, body, received_at=NOW - timedelta(minutes=10)) is not None
    for malformed in (f"v1={v1[3:]}", f"t=soon,{v1}"):
        with pytest.raises(WebhookRefused) as refused:
            provider.parse_webhook({"Stripe-Signature": malformed}, body, received_at=ARRIVED)
        assert refused.value.reason == "malformed_signature"
    with pytest.raises(WebhookRefused) as unversioned:
        provider.parse_webhook({"Stripe-Signature": f"{t},v0={v1[3:]}"}, body, received_at=ARRIVED)
    assert unversioned.value.reason == "bad_signature"
    with pytest.raises(WebhookRefused) as not_text:
        provider.parse_webhook(*stripe_signed_bytes(b"\xff\xfe"), received_at=ARRIVED)
    assert not_text.value.reason == "malformed"


PAID_INTENT = {
    "id": "pi_1",
    "amount": 2500,
    "amount_received": 2500,
    "currency": "kes",
    "metadata": {"openami_reference": "pay-1"},
}


def stripe_signed_bytes(body: bytes) -> tuple[dict[str, str], bytes]:
    """Stripe's scheme over raw bytes (the HMAC covers the bytes; the library reads the body as UTF-8 text)."""
    t = int(NOW.timestamp())
    sig = hmac.new(WHSEC.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={t},v1={sig}"}, body


# -- WeChat Pay from settings -------------------------------------------------------------------------------------


@pytest.fixture
def wechat_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform_key: rsa.RSAPrivateKey
) -> dict[str, str]:
    """Every WeChat Pay setting in the environment, the keys generated into files."""
    merchant = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    merchant_file = tmp_path / "apiclient_key.pem"
    merchant_file.write_bytes(
        merchant.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    platform_file = tmp_path / "pub_key.pem"
    platform_file.write_text(_public_pem(platform_key))
    env = {
        "OPENAMI_WECHATPAY_MCHID": "1900000109",
        "OPENAMI_WECHATPAY_APPID": "wxd678efh567hg6787",
        "OPENAMI_WECHATPAY_APIV3_KEY": APIV3_KEY,
        "OPENAMI_WECHATPAY_MERCHANT_SERIAL": "444F4864EA9B34415",
        "OPENAMI_WECHATPAY_MERCHANT_PRIVATE_KEY_FILE": str(merchant_file),
        "OPENAMI_WECHATPAY_PLATFORM_PUBLIC_KEY_FILE": str(platform_file),
        "OPENAMI_WECHATPAY_PLATFORM_SERIAL": SERIAL,
        "OPENAMI_WECHATPAY_NOTIFY_URL": "https://ami.example.org/api/v1/payments/webhooks/wechatpay",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def _names(settings: Settings) -> list[str]:
    return [p.name for p in payment_providers(settings, ManualClock(NOW))]


def test_wechat_pay_is_offered_when_all_its_settings_are_set(
    wechat_env: dict[str, str], platform_key: rsa.RSAPrivateKey
) -> None:
    providers = {p.name: p for p in payment_providers(Settings(), ManualClock(NOW))}
    assert sorted(providers) == ["sandbox", "wechatpay"]
    # It verifies with the platform key from the file and decrypts with the API v3 key from the environment.
    event = providers["wechatpay"].parse_webhook(
        *wechat_signed(platform_key, "TRANSACTION.SUCCESS", PAID), received_at=ARRIVED
    )
    assert event is not None
    assert (event.reference, event.amount_minor) == ("pay-9", 1000)


def test_wechat_pay_is_not_offered_without_settings() -> None:
    assert _names(Settings()) == ["sandbox"]
    assert _names(Settings(wechatpay_mchid="  ", wechatpay_apiv3_key="")) == ["sandbox"]  # blank is unset


def test_wechat_pay_settings_given_in_part_name_what_is_missing(
    wechat_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAMI_WECHATPAY_APIV3_KEY")
    monkeypatch.delenv("OPENAMI_WECHATPAY_NOTIFY_URL")
    with pytest.raises(ConfigurationError) as partial:
        payment_providers(Settings(), ManualClock(NOW))
    message = str(partial.value)
    assert "OPENAMI_WECHATPAY_APIV3_KEY, OPENAMI_WECHATPAY_NOTIFY_URL are not set" in message
    assert "OPENAMI_WECHATPAY_MCHID" in message  # what is set, too
    for name in ("OPENAMI_WECHATPAY_APIV3_KEY", "OPENAMI_WECHATPAY_NOTIFY_URL"):
        monkeypatch.setenv(name, wechat_env[name])
    monkeypatch.delenv("OPENAMI_WECHATPAY_MCHID")
    with pytest.raises(ConfigurationError, match="OPENAMI_WECHATPAY_MCHID is not set"):
        payment_providers(Settings(), ManualClock(NOW))


@pytest.mark.parametrize(
    ("setting", "content", "expected"),
    [
        ("OPENAMI_WECHATPAY_PLATFORM_PUBLIC_KEY_FILE", None, "cannot read the key file"),
        ("OPENAMI_WECHATPAY_MERCHANT_PRIVATE_KEY_FILE", None, "cannot read the key file"),
        ("OPENAMI_WECHATPAY_PLATFORM_PUBLIC_KEY_FILE", b"\xff\xfe not text", "not a text (PEM) file"),
        ("OPENAMI_WECHATPAY_PLATFORM_PUBLIC_KEY_FILE", b"-----BEGIN PUBLIC KEY-----\nAAAA\n", "not a"),
        ("OPENAMI_WECHATPAY_PLATFORM_PUBLIC_KEY_FILE", b"-----BEGIN CERTIFICATE-----\nAAAA\n", "not a"),
        ("OPENAMI_WECHATPAY_MERCHANT_PRIVATE_KEY_FILE", b"-----BEGIN PRIVATE KEY-----\nAAAA\n", "not a PEM"),
    ],
)
def test_an_unreadable_or_wrong_key_file_is_named(
    wechat_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    setting: str,
    content: bytes | None,
    expected: str,
) -> None:
    bad = tmp_path / "bad.pem"
    if content is not None:
        bad.write_bytes(content)
    monkeypatch.setenv(setting, str(bad))
    with pytest.raises(ConfigurationError) as refused:
        payment_providers(Settings(), ManualClock(NOW))
    assert str(refused.value).startswith(f"{setting}: ")
    assert expected in str(refused.value)


def test_a_wrong_api_v3_key_or_plain_http_notify_url_is_named(
    wechat_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAMI_WECHATPAY_APIV3_KEY", "too-short")
    with pytest.raises(ConfigurationError, match=r"^OPENAMI_WECHATPAY_APIV3_KEY: must be 32 bytes"):
        payment_providers(Settings(), ManualClock(NOW))
    monkeypatch.setenv("OPENAMI_WECHATPAY_APIV3_KEY", APIV3_KEY)
    monkeypatch.setenv("OPENAMI_WECHATPAY_NOTIFY_URL", "http://ami.example.org/hook")
    with pytest.raises(ConfigurationError, match=r"^OPENAMI_WECHATPAY_NOTIFY_URL must be an https:// URL"):
        payment_providers(Settings(), ManualClock(NOW))
