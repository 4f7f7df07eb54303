"""Each channel against a real local receiver: an aiosmtpd SMTP server, HTTP receivers that check the VAPID
header and decrypt the push payload, verify webhook signatures, and take apprise's json:// posts."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from typing import Any

import http_ece
import pytest
from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from openami.common.clock import ManualClock
from openami.common.errors import ValidationError
from openami.notifications.channels import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AppriseChannel,
    ConsoleChannel,
    EmailChannel,
    WebhookChannel,
    WebPushChannel,
    validate_address,
    verify_webhook,
)
from openami.notifications.interfaces import (
    ChannelKind,
    Language,
    Outcome,
    OutgoingMessage,
    Recipient,
    Rule,
)
from tests.unit.notifications.receivers import http_receiver

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECRET = "whsec-0123456789abcdef"


def message(**changes: Any) -> OutgoingMessage:
    values: dict[str, Any] = {
        "idempotency_key": "0f" * 16,
        "rule": Rule.DISCONNECT_WARNING,
        "account_id": 7,
        "language": Language.SIMPLIFIED_CHINESE,
        "subject": "账户 A7 将于 2026-03-02 17:00 停电",
        "body": "您的账户 A7 余额为 KES 1.20。",
        "urgent": True,
        "data": {"type": "DisconnectWarning", "account_id": 7},
        "created_at": NOW,
    }
    return OutgoingMessage(**{**values, **changes})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- e-mail ----------------------------------------------------------------------------------------------------


class SmtpHandler:
    """Keeps what it is sent; refuses recipients by their local part: `busy@` 451, `nobody@` 550."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:  # noqa: N802  (aiosmtpd's hook name)
        if address.startswith("busy@"):
            return "451 4.3.0 try again later"
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802  (as above)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpHandler, int]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handler = SmtpHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def test_email_is_delivered_to_a_real_smtp_server(smtp: tuple[SmtpHandler, int]) -> None:
    handler, port = smtp
    channel = EmailChannel("127.0.0.1", port, "alerts@utility.example")
    result = channel.send(message(), Recipient("wanjiru@example.com"))
    assert result.outcome is Outcome.OK
    assert result.provider_reference == f"<{'0f' * 16}@openami.invalid>"
    ((sender, to, content),) = handler.received
    assert (sender, to) == ("alerts@utility.example", ["wanjiru@example.com"])
    mail = message_from_bytes(content, policy=default_policy)
    assert mail["Subject"] == "账户 A7 将于 2026-03-02 17:00 停电"
    assert mail["Message-ID"] == f"<{'0f' * 16}@openami.invalid>"
    assert mail.get_content().strip() == "您的账户 A7 余额为 KES 1.20。"  # type: ignore[attr-defined]


def test_email_refusals_are_retryable_or_permanent_by_smtp_code(smtp: tuple[SmtpHandler, int]) -> None:
    handler, port = smtp
    channel = EmailChannel("127.0.0.1", port, "alerts@utility.example")
    busy = channel.send(message(), Recipient("busy@example.com"))
    gone = channel.send(message(), Recipient("nobody@example.com"))
    assert (busy.outcome, gone.outcome) == (Outcome.RETRYABLE, Outcome.PERMANENT)
    assert "451" in (busy.error or "")
    assert "550" in (gone.error or "")
    assert handler.received == []


def test_email_to_a_server_that_is_down_is_retryable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    result = EmailChannel("127.0.0.1", port, "a@b.example", timeout_s=2).send(
        message(), Recipient("x@y.example")
    )
    assert result.outcome is Outcome.RETRYABLE
    assert f"127.0.0.1:{port} unreachable" in (result.error or "")


# -- webhooks --------------------------------------------------------------------------------------------------


def test_webhook_is_signed_and_the_receiver_verifies_it() -> None:
    clock = ManualClock(NOW)
    with http_receiver() as receiver:
        result = WebhookChannel(clock).send(message(), Recipient(receiver.url + "/hook", SECRET))
    assert result.outcome is Outcome.OK
    (request,) = receiver.requests
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers[TIMESTAMP_HEADER.lower()] == str(int(NOW.timestamp()))
    assert headers[IDEMPOTENCY_HEADER.lower()] == "0f" * 16
    verify_webhook(
        SECRET, request.body, headers[TIMESTAMP_HEADER.lower()], headers[SIGNATURE_HEADER.lower()], NOW
    )
    document = json.loads(request.body)
    assert (document["rule"], document["account_id"], document["urgent"]) == ("disconnect_warning", 7, True)
    assert document["event"] == {"type": "DisconnectWarning", "account_id": 7}
    # A receiver refuses a changed body, another secret, and an old (replayed) request.
    timestamp, signature = headers[TIMESTAMP_HEADER.lower()], headers[SIGNATURE_HEADER.lower()]
    with pytest.raises(ValidationError, match="does not match"):
        verify_webhook(
            SECRET, request.body.replace(b'"account_id":7', b'"account_id":8'), timestamp, signature, NOW
        )
    with pytest.raises(ValidationError, match="does not match"):
        verify_webhook("another-secret-0123456", request.body, timestamp, signature, NOW)
    with pytest.raises(ValidationError, match="more than"):
        verify_webhook(SECRET, request.body, timestamp, signature, NOW + timedelta(minutes=6))
    with pytest.raises(ValidationError, match="missing"):
        verify_webhook(SECRET, request.body, timestamp, None, NOW)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(500, Outcome.RETRYABLE), (503, Outcome.RETRYABLE), (429, Outcome.RETRYABLE), (400, Outcome.PERMANENT)],
)
def test_webhook_http_errors_are_classified(status: int, outcome: Outcome) -> None:
    with http_receiver() as receiver:
        receiver.statuses.append(status)
        result = WebhookChannel(ManualClock(NOW)).send(message(), Recipient(receiver.url, SECRET))
    assert result.outcome is outcome
    assert f"HTTP {status}" in (result.error or "")


def test_webhook_without_a_secret_is_permanent_and_unreachable_is_retryable() -> None:
    channel = WebhookChannel(ManualClock(NOW), timeout_s=2)
    assert channel.send(message(), Recipient("http://127.0.0.1:9/x")).outcome is Outcome.PERMANENT
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert (
        channel.send(message(), Recipient(f"http://127.0.0.1:{port}/x", SECRET)).outcome is Outcome.RETRYABLE
    )


# -- web push --------------------------------------------------------------------------------------------------


@pytest.fixture
def vapid_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def browser_subscription(endpoint: str) -> tuple[str, ec.EllipticCurvePrivateKey, bytes]:
    """What a browser makes: a P-256 key pair and an auth secret; the subscription JSON holds the public half."""
    browser_key = ec.generate_private_key(ec.SECP256R1())
    auth = os.urandom(16)
    public = browser_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    subscription = {"endpoint": endpoint, "keys": {"p256dh": b64url(public), "auth": b64url(auth)}}
    return json.dumps(subscription), browser_key, auth


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_vapid(authorization: str, vapid_pem: bytes, audience: str) -> None:
    """RFC 8292: `vapid t=<ES256 JWT>,k=<public key>`; the JWT verifies under our key and names the push service."""
    scheme, _, params = authorization.partition(" ")
    fields = dict(part.strip().split("=", 1) for part in params.split(","))
    assert scheme == "vapid"
    key = serialization.load_pem_private_key(vapid_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    public = key.public_key()
    raw_public = public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert b64url_decode(fields["k"]) == raw_public
    header, claims, signature = fields["t"].split(".")
    raw = b64url_decode(signature)
    der = utils.encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public.verify(der, f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))  # raises if forged
    decoded = json.loads(b64url_decode(claims))
    assert (decoded["aud"], decoded["sub"]) == (audience, "mailto:ops@utility.example")


def test_web_push_sends_a_vapid_signed_encrypted_payload(vapid_pem: bytes) -> None:
    with http_receiver() as receiver:
        address, browser_key, auth = browser_subscription(receiver.url + "/push/abc")
        channel = WebPushChannel(vapid_pem, "mailto:ops@utility.example")
        result = channel.send(message(), Recipient(address))
    assert result.outcome is Outcome.OK
    assert result.provider_reference == receiver.url + "/messages/1"
    (request,) = receiver.requests
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert request.path == "/push/abc"
    check_vapid(headers["authorization"], vapid_pem, receiver.url)
    assert headers["content-encoding"] == "aes128gcm"
    assert (headers["topic"], headers["urgency"]) == ("0f" * 16, "high")
    assert b"A7" not in request.body  # encrypted
    clear = http_ece.decrypt(request.body, private_key=browser_key, auth_secret=auth, version="aes128gcm")
    payload = json.loads(clear)
    assert payload["title"] == "账户 A7 将于 2026-03-02 17:00 停电"
    assert payload["tag"] == "0f" * 16


@pytest.mark.parametrize(
    ("status", "outcome", "gone"),
    [(410, Outcome.PERMANENT, True), (404, Outcome.PERMANENT, True), (429, Outcome.RETRYABLE, False)],
)
def test_web_push_errors(vapid_pem: bytes, status: int, outcome: Outcome, gone: bool) -> None:
    with http_receiver() as receiver:
        receiver.statuses.append(status)
        address, _, _ = browser_subscription(receiver.url + "/push/abc")
        result = WebPushChannel(vapid_pem, "mailto:ops@utility.example").send(message(), Recipient(address))
    assert (result.outcome, result.gone) == (outcome, gone)


def test_web_push_refuses_a_bad_vapid_key_or_subject(vapid_pem: bytes) -> None:
    with pytest.raises(ValidationError, match="VAPID private key"):
        WebPushChannel(b"not a key", "mailto:ops@utility.example")
    with pytest.raises(ValidationError, match="VAPID subject"):
        WebPushChannel(vapid_pem, "ops@utility.example")


# -- apprise ---------------------------------------------------------------------------------------------------


def test_apprise_posts_to_a_json_url() -> None:
    with http_receiver() as receiver:
        url = receiver.url.replace("http://", "json://") + "/sms-gateway"
        result = AppriseChannel().send(message(), Recipient(url))
        receiver.statuses.append(500)
        failed = AppriseChannel().send(message(), Recipient(url))
    assert result.outcome is Outcome.OK
    assert failed.outcome is Outcome.RETRYABLE
    document = json.loads(receiver.requests[0].body)
    assert document["title"] == "账户 A7 将于 2026-03-02 17:00 停电"
    assert document["message"] == "您的账户 A7 余额为 KES 1.20。"
    assert AppriseChannel().send(message(), Recipient("nonsense://x")).outcome is Outcome.PERMANENT


# -- addresses and the console ---------------------------------------------------------------------------------


def test_addresses_are_checked_per_channel() -> None:
    assert validate_address(ChannelKind.EMAIL, " a@b.example ", None) == "a@b.example"
    with pytest.raises(ValidationError, match="email address: not an e-mail address"):
        validate_address(ChannelKind.EMAIL, "a@b", None)
    with pytest.raises(ValidationError, match="signing secret"):
        validate_address(ChannelKind.WEBHOOK, "https://h.example/x", "short")
    with pytest.raises(ValidationError, match="http or https"):
        validate_address(ChannelKind.WEBHOOK, "ftp://h.example/x", SECRET)
    with pytest.raises(ValidationError, match="PushSubscription"):
        validate_address(ChannelKind.WEB_PUSH, '{"endpoint": "https://p.example/1"}', None)
    with pytest.raises(ValidationError, match="apprise does not know"):
        validate_address(ChannelKind.APPRISE, "nonsense://x", None)
    with pytest.raises(ValidationError, match="only webhooks take a secret"):
        validate_address(ChannelKind.EMAIL, "a@b.example", SECRET)


def test_console_channel_writes_one_line() -> None:
    stream = io.StringIO()
    result = ConsoleChannel(ChannelKind.EMAIL, stream).send(message(), Recipient("a@b.example"))
    assert result.outcome is Outcome.OK
    assert (
        stream.getvalue()
        == "[email -> a@b.example] 账户 A7 将于 2026-03-02 17:00 停电: 您的账户 A7 余额为 KES 1.20。\n"
    )
