"""Channels behind one Protocol: web push (VAPID), e-mail (SMTP), apprise URLs (SMS, chat apps) and signed
webhooks, plus a console channel for running without outside services.

A channel sends one message to one address and says how it went: ok, retryable (try later) or permanent (this
address will never take it). Third-party errors become a `DeliveryResult` here, at the edge; nothing a channel
raises reaches the delivery loop by design. `resend_safe` says whether sending the same message twice shows it
once (the receiver honours its idempotency key): only then may a send interrupted by a crash be repeated.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import smtplib
import ssl
import sys
import urllib.error
import urllib.request
import warnings
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, Protocol, TextIO
from urllib.parse import urlsplit

import apprise
import requests
from py_vapid import Vapid02  # type: ignore[import-untyped]  # py-vapid ships no type hints
from pywebpush import WebPushException, webpush  # type: ignore[import-untyped]  # nor does pywebpush

from openami.common.clock import Clock
from openami.common.errors import ValidationError
from openami.notifications.interfaces import ChannelKind, DeliveryResult, OutgoingMessage, Recipient

with warnings.catch_warnings():
    # apprise 2.3.0's PGP support imports the stdlib's deprecated `imghdr` when its plugins load: load them
    # once, here, with that one warning silenced, so it never surfaces at a first send (nor fails a test run).
    warnings.filterwarnings("ignore", message="'imghdr' is deprecated", category=DeprecationWarning)
    apprise.Apprise.instantiate("json://localhost")

SIGNATURE_HEADER = "X-OpenAMI-Signature"
TIMESTAMP_HEADER = "X-OpenAMI-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_RETRYABLE_HTTP = frozenset({408, 425, 429})
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
MIN_WEBHOOK_SECRET_CHARS = 16


class Channel(Protocol):
    """Sends one message to one recipient. Never raises for a failed delivery: it returns the outcome."""

    @property
    def kind(self) -> ChannelKind: ...

    @property
    def resend_safe(self) -> bool: ...

    def send(self, message: OutgoingMessage, recipient: Recipient) -> DeliveryResult: ...


def _short(error: object) -> str:
    return str(error)[:400]


def _http_outcome(status: int, what: str) -> DeliveryResult:
    if status in _RETRYABLE_HTTP or status >= 500:
        return DeliveryResult.retryable(f"{what} answered HTTP {status}")
    return DeliveryResult.permanent(f"{what} answered HTTP {status}", gone=status in (404, 410))


def _check_http_url(url: str, where: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in url):
        raise ValidationError(f"must be an http or https URL, got {url[:200]!r}", where)
    return url


def validate_address(channel: ChannelKind, address: str, secret: str | None) -> str:
    """The address as stored, or ValidationError saying what is wrong with it for `channel`."""
    where = f"{channel.value} address"
    if not isinstance(address, str) or not address.strip() or len(address) > 4000:
        raise ValidationError("must be a non-empty string of at most 4000 characters", where)
    address = address.strip()
    if channel is ChannelKind.EMAIL:
        if len(address) > 254 or not _EMAIL.fullmatch(address):
            raise ValidationError(f"not an e-mail address: {address[:80]!r}", where)
    elif channel is ChannelKind.WEB_PUSH:
        subscription = parse_push_subscription(address, where)
        address = json.dumps(subscription, sort_keys=True, separators=(",", ":"))
    elif channel is ChannelKind.APPRISE:
        if apprise.Apprise.instantiate(address) is None:
            raise ValidationError("apprise does not know this URL (see apprise's list of services)", where)
    else:
        _check_http_url(address, where)
        if secret is None or len(secret) < MIN_WEBHOOK_SECRET_CHARS or len(secret) > 200:
            raise ValidationError(
                f"a webhook needs a signing secret of {MIN_WEBHOOK_SECRET_CHARS} to 200 characters",
                "webhook secret",
            )
    if channel is not ChannelKind.WEBHOOK and secret is not None:
        raise ValidationError("only webhooks take a secret", f"{channel.value} secret")
    return address


def parse_push_subscription(address: str, where: str = "web push address") -> dict[str, Any]:
    """A browser's PushSubscription JSON: `{"endpoint": url, "keys": {"p256dh": ..., "auth": ...}}`."""
    try:
        value = json.loads(address)
    except ValueError as exc:
        raise ValidationError(f"not JSON: {exc}", where) from exc
    keys = value.get("keys") if isinstance(value, dict) else None
    if (
        not isinstance(keys, dict)
        or not isinstance(value.get("endpoint"), str)
        or not all(isinstance(keys.get(k), str) and keys[k] for k in ("p256dh", "auth"))
    ):
        raise ValidationError("must be a PushSubscription: endpoint, keys.p256dh and keys.auth", where)
    _check_http_url(value["endpoint"], where)
    return {"endpoint": value["endpoint"], "keys": {"p256dh": keys["p256dh"], "auth": keys["auth"]}}


class WebPushChannel:
    """Web push with VAPID (RFC 8292) through `pywebpush`; the payload is encrypted for the browser (RFC 8291).

    Resend-safe: the push service keeps one undelivered message per `Topic`, and the payload's `tag` makes the
    browser replace rather than add a notification, both set to the message's idempotency key.
    """

    kind = ChannelKind.WEB_PUSH
    resend_safe = True

    def __init__(
        self, vapid_private_key_pem: bytes, subject: str, *, ttl_s: int = 86_400, timeout_s: float = 10.0
    ):
        if not subject.startswith(("mailto:", "https://")):
            raise ValidationError("must be a mailto: or https: URL (RFC 8292)", "VAPID subject")
        try:
            self._vapid = Vapid02.from_pem(vapid_private_key_pem)
        except Exception as exc:  # py-vapid raises whatever `cryptography` does for a bad key
            raise ValidationError(f"not a PEM EC P-256 private key: {exc}", "VAPID private key") from exc
        self._subject = subject
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s

    def send(self, message: OutgoingMessage, recipient: Recipient) -> DeliveryResult:
        try:
            subscription = parse_push_subscription(recipient.address)
        except ValidationError as exc:
            return DeliveryResult.permanent(str(exc))
        payload = json.dumps(
            {
                "title": message.subject,
                "body": message.body,
                "tag": message.idempotency_key,
                "data": message.data,
            },
            ensure_ascii=False,
        )
        headers = {"Topic": message.idempotency_key[:32], "Urgency": "high" if message.urgent else "normal"}
        try:
            response = webpush(
                subscription,
                data=payload,
                vapid_private_key=self._vapid,
                vapid_claims={"sub": self._subject},  # a fresh dict: pywebpush writes aud and exp into it
                ttl=self._ttl_s,
                timeout=self._timeout_s,
                headers=headers,
            )
        except WebPushException as exc:
            status = getattr(exc.response, "status_code", None)
            if status is None:
                return DeliveryResult.retryable(f"push failed without a response: {_short(exc.message)}")
            return _http_outcome(int(status), "push service")
        except requests.RequestException as exc:
            return DeliveryResult.retryable(f"push service unreachable: {_short(exc)}")
        return DeliveryResult.ok(response.headers.get("Location"))


class EmailChannel:
    """E-mail through an SMTP server (smtplib). Not resend-safe: a second copy would arrive as a second mail,
    although its Message-ID (from the idempotency key) lets a mail client tell the two are one."""

    kind = ChannelKind.EMAIL
    resend_safe = False

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout_s: float = 10.0,
        message_id_domain: str = "openami.invalid",
    ) -> None:
        self._host, self._port, self._sender = host, port, sender
        self._username, self._password = username, password
        self._starttls = starttls
        self._timeout_s = timeout_s
        self._domain = message_id_domain

    def compose(self, message: OutgoingMessage, to: str) -> EmailMessage:
        mail = EmailMessage()
        mail["Subject"] = message.subject
        mail["From"] = self._sender
        mail["To"] = to
        mail["Date"] = format_datetime(message.created_at.astimezone(UTC))
        mail["Message-ID"] = f"<{message.idempotency_key}@{self._domain}>"
        mail["Content-Language"] = message.language.value
        mail.set_content(message.body)
        return mail

    def send(self, message: OutgoingMessage, recipient: Recipient) -> DeliveryResult:
        mail = self.compose(message, recipient.address)
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout_s) as smtp:
                if self._starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self._username is not None:
                    smtp.login(self._username, self._password or "")
                smtp.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            detail = f"recipient refused: {_short(exc.recipients)}"
            if codes and all(400 <= code < 500 for code in codes):
                return DeliveryResult.retryable(detail)
            return DeliveryResult.permanent(detail)
        except smtplib.SMTPAuthenticationError as exc:  # the server's settings, not the recipient: try later
            return DeliveryResult.retryable(f"SMTP login refused ({exc.smtp_code})")
        except smtplib.SMTPResponseException as exc:
            detail = f"SMTP {exc.smtp_code}: {_short(exc.smtp_error)}"
            if 400 <= exc.smtp_code < 500:
                return DeliveryResult.retryable(detail)
            return DeliveryResult.permanent(detail)
        except (smtplib.SMTPException, OSError) as exc:  # disconnects, refused connections, timeouts
            return DeliveryResult.retryable(
                f"SMTP server {self._host}:{self._port} unreachable: {_short(exc)}"
            )
        return DeliveryResult.ok(mail["Message-ID"])


class AppriseChannel:
    """SMS gateways and chat apps through an apprise URL per recipient (e.g. `tgram://`, `wecombot://`,
    `twilio://`, `json://`). Apprise reports only success or failure, so a failure is retried; an URL apprise
    cannot use is permanent. Not resend-safe."""

    kind = ChannelKind.APPRISE
    resend_safe = False

    def __init__(self, *, timeout_s: float = 10.0) -> None:
        self._timeout_s = timeout_s

    def send(self, message: OutgoingMessage, recipient: Recipient) -> DeliveryResult:
        notifier = apprise.Apprise()
        if not notifier.add(recipient.address):
            return DeliveryResult.permanent("apprise does not know this URL")
        try:
            delivered = notifier.notify(body=message.body, title=message.subject, timeout=self._timeout_s)
        except Exception as exc:  # an apprise plugin's own error: the service may recover
            return DeliveryResult.retryable(f"apprise: {type(exc).__name__}: {_short(exc)}")
        if not delivered:
            return DeliveryResult.retryable("apprise reported the notification as not delivered")
        return DeliveryResult.ok()


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    """`v1=` and the hex HMAC-SHA256, under `secret`, of the Unix timestamp, a dot and the body."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def verify_webhook(
    secret: str,
    body: bytes,
    timestamp_header: str | None,
    signature_header: str | None,
    now: datetime,
    tolerance: timedelta = timedelta(minutes=5),
) -> None:
    """What a receiver does with an openami webhook: raise ValidationError unless the signature matches the
    body and timestamp and the timestamp is within `tolerance` of `now` (so an old request cannot be replayed)."""
    if not timestamp_header or not timestamp_header.isdigit():
        raise ValidationError("missing or not a Unix time", TIMESTAMP_HEADER)
    if not signature_header:
        raise ValidationError("missing", SIGNATURE_HEADER)
    timestamp = int(timestamp_header)
    if abs(now.timestamp() - timestamp) > tolerance.total_seconds():
        raise ValidationError(f"{timestamp} is more than {tolerance} from now", TIMESTAMP_HEADER)
    if not hmac.compare_digest(sign_webhook(secret, timestamp, body), signature_header):
        raise ValidationError("does not match the body and timestamp", SIGNATURE_HEADER)


class WebhookChannel:
    """A JSON POST signed with the subscription's secret (see `sign_webhook`), with the message's idempotency key
    in `Idempotency-Key`. Resend-safe by contract: receivers must ignore a key they have already seen."""

    kind = ChannelKind.WEBHOOK
    resend_safe = True

    def __init__(self, clock: Clock, *, timeout_s: float = 10.0) -> None:
        self._clock = clock
        self._timeout_s = timeout_s

    @staticmethod
    def body(message: OutgoingMessage) -> bytes:
        document = {
            "id": message.idempotency_key,
            "rule": message.rule.value,
            "account_id": message.account_id,
            "language": message.language.value,
            "subject": message.subject,
            "body": message.body,
            "urgent": message.urgent,
            "event": message.data,
            "created_at": message.created_at.astimezone(UTC).isoformat(),
        }
        return json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()

    def send(self, message: OutgoingMessage, recipient: Recipient) -> DeliveryResult:
        if not recipient.secret:
            return DeliveryResult.permanent("the webhook subscription has no signing secret")
        try:
            url = _check_http_url(recipient.address, "webhook address")
        except ValidationError as exc:
            return DeliveryResult.permanent(str(exc))
        body = self.body(message)
        timestamp = int(self._clock.now().timestamp())
        request = urllib.request.Request(  # noqa: S310  (the scheme is checked above: http or https only)
            url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "openami-webhook/1",
                TIMESTAMP_HEADER: str(timestamp),
                SIGNATURE_HEADER: sign_webhook(recipient.secret, timestamp, body),
                IDEMPOTENCY_HEADER: message.idempotency_key,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:  # noqa: S310  (as above)
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            return _http_outcome(exc.code, "webhook receiver")
        except (urllib.error.URLError, OSError) as exc:  # refused, DNS, timeouts
            return DeliveryResult.retryable(f"webhook receiver unreachable: {_short(exc)}")
        if not 200 <= status < 300:
            return _http_outcome(status, "webhook receiver")
        return DeliveryResult.ok(f"HTTP {status}")


class ConsoleChannel:
    """Writes each message as one line to a stream: the local stand-in for any channel (the demo, a laptop)."""

    resend_safe = True

    def __init__(self, kind: ChannelKind, stream: TextIO | None = None) -> None:
        self.kind = kind
        self._stream = stream if stream is not None else sys.stdout

    def send(self, message: OutgoingMessage, recipient: Recipient) -> DeliveryResult:
        self._stream.write(
            f"[{self.kind.value} -> {recipient.address[:60]}] {message.subject}: {message.body}\n"
        )
        return DeliveryResult.ok()
