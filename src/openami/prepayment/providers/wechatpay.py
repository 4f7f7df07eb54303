"""WeChat Pay API v3, through `wechatpayv3`: Native checkouts (a QR code URL) and verified, decrypted notifications.

A notification is trusted only when, as WeChat Pay documents: its `Wechatpay-Serial` names the platform key we hold,
its `Wechatpay-Timestamp` is within `tolerance_s` of the notification's arrival (`received_at`), its `Wechatpay-Signature` is the
platform's RSA-SHA256 (PKCS#1 v1.5) signature of "timestamp\\nnonce\\nbody\\n", and its resource decrypts with the
API v3 key (AEAD_AES_256_GCM, the nonce and associated data given beside the ciphertext). Our payment reference
is the merchant order number (`out_trade_no`); WeChat Pay's `transaction_id` is the provider payment id.
WeChat Pay has no card-style chargeback: its refund notifications are the reversals.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from wechatpayv3 import WeChatPay, WeChatPayType  # type: ignore[import-untyped]
from wechatpayv3.utils import (  # type: ignore[import-untyped]
    aes_decrypt,
    load_certificate,
    load_private_key,
    load_public_key,
    rsa_verify,
)

from openami.common.errors import ConflictError, ValidationError
from openami.prepayment.providers import (
    Checkout,
    CheckoutRequest,
    EventKind,
    PaymentEvent,
    WebhookRefused,
    header,
    signed_age_s,
)


class NativePayClient(Protocol):
    """The part of `wechatpayv3.WeChatPay` used to open a checkout (tests pass a fake)."""

    def pay(
        self, description: str, out_trade_no: str, amount: dict[str, Any], **kwargs: Any
    ) -> tuple[int, str]: ...


def platform_key(pem: str) -> RSAPublicKey:
    """The platform's RSA public key from its certificate or public-key PEM."""
    try:
        if "CERTIFICATE" in pem:
            certificate = load_certificate(pem)  # None when it is not one
            key = None if certificate is None else certificate.public_key()
        else:
            key = load_public_key(pem)
    except Exception as exc:  # the library raises bare Exception for a key it cannot load
        raise ValidationError(
            f"not a certificate or public key PEM: {exc}", "wechat pay platform key"
        ) from exc
    if key is None:
        raise ValidationError("not a certificate or public key PEM", "wechat pay platform key")
    if not isinstance(key, RSAPublicKey):
        raise ValidationError("must be an RSA key", "wechat pay platform key")
    return key


def merchant_key(pem: str) -> RSAPrivateKey:
    """The merchant's RSA private key (`apiclient_key.pem`), loaded as `wechatpayv3` will load it."""
    try:
        key = load_private_key(pem)
    except Exception as exc:  # the library raises bare Exception for a key it cannot load
        raise ValidationError(f"not a PEM private key: {exc}", "wechat pay merchant private key") from exc
    if not isinstance(key, RSAPrivateKey):
        raise ValidationError("must be an RSA private key", "wechat pay merchant private key")
    return key


class WeChatPayProvider:
    """WeChat Pay (API v3, Native). `client` opens checkouts; without one, a `WeChatPay` is built from the
    merchant credentials when the first checkout is opened (it talks to WeChat Pay's servers)."""

    name = "wechatpay"

    def __init__(
        self,
        *,
        apiv3_key: str,
        platform_public_key: str,
        platform_serial: str,
        notify_url: str,
        mchid: str = "",
        appid: str = "",
        merchant_private_key: str = "",
        merchant_serial: str = "",
        client: NativePayClient | None = None,
        tolerance_s: int = 300,
    ) -> None:
        if len(apiv3_key.encode()) != 32:
            raise ValidationError("must be 32 bytes (AES-256)", "wechat pay API v3 key")
        self._apiv3_key = apiv3_key
        self._platform_pem = platform_public_key
        self._platform_key = platform_key(platform_public_key)
        self._platform_serial = platform_serial
        self._notify_url = notify_url
        if merchant_private_key:
            merchant_key(merchant_private_key)  # refused now, not at the first checkout
        self._merchant = (mchid, appid, merchant_private_key, merchant_serial)
        self._client = client
        self._tolerance_s = tolerance_s

    def _native_client(self) -> NativePayClient:
        if self._client is None:
            mchid, appid, private_key, serial = self._merchant
            if not (mchid and appid and private_key and serial):
                raise ValidationError(
                    "mchid, appid, merchant private key and serial are needed to open checkouts", "wechat pay"
                )
            try:
                self._client = WeChatPay(
                    wechatpay_type=WeChatPayType.NATIVE,
                    mchid=mchid,
                    private_key=private_key,
                    cert_serial_no=serial,
                    appid=appid,
                    apiv3_key=self._apiv3_key,
                    notify_url=self._notify_url,
                    public_key=self._platform_pem,
                    public_key_id=self._platform_serial,
                )
            except Exception as exc:  # the library raises bare Exception for bad credentials
                raise ValidationError(f"cannot build the WeChat Pay client: {exc}", "wechat pay") from exc
        return self._client

    def start_checkout(self, request: CheckoutRequest) -> Checkout:
        try:
            code, text = self._native_client().pay(
                description=request.description[:127],
                out_trade_no=request.reference,
                amount={"total": request.amount_minor, "currency": request.currency},
                notify_url=self._notify_url,
                pay_type=WeChatPayType.NATIVE,
            )
        except (OSError, ValueError) as exc:  # requests' errors are OSErrors
            raise ConflictError(f"wechat pay could not be reached for {request.reference}: {exc}") from exc
        if code != 200:
            raise ConflictError(
                f"wechat pay refused the checkout for {request.reference}: {code} {text[:300]}"
            )
        try:
            code_url = json.loads(text)["code_url"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConflictError(f"wechat pay answered without a code_url for {request.reference}") from exc
        return Checkout(str(code_url), None, None)

    def parse_webhook(
        self, headers: Mapping[str, str], body: bytes, *, received_at: datetime
    ) -> PaymentEvent | None:
        values = {
            name: header(headers, f"Wechatpay-{name}")
            for name in ("Timestamp", "Nonce", "Signature", "Serial")
        }
        missing = [f"Wechatpay-{name}" for name, value in values.items() if not value]
        if missing:
            raise WebhookRefused("missing_signature", f"missing header(s): {', '.join(missing)}")
        if values["Serial"] != self._platform_serial:
            raise WebhookRefused(
                "unknown_key",
                f"signed with platform key {values['Serial']!r}, we hold {self._platform_serial!r}",
            )
        timestamp = values["Timestamp"] or ""
        if not timestamp.isdigit():
            raise WebhookRefused(
                "malformed_signature", f"Wechatpay-Timestamp {timestamp!r} is not Unix seconds"
            )
        age_s = signed_age_s(int(timestamp), received_at)
        if abs(age_s) > self._tolerance_s:
            raise WebhookRefused(
                "stale_timestamp",
                f"signed {abs(age_s):.0f} s {'before' if age_s > 0 else 'after'} it was received at "
                f"{received_at.isoformat()}, more than {self._tolerance_s} s",
            )
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WebhookRefused("malformed", "the body is not UTF-8") from exc
        if not rsa_verify(timestamp, values["Nonce"], text, values["Signature"], self._platform_key):
            raise WebhookRefused("bad_signature", "Wechatpay-Signature does not verify with the platform key")
        try:
            notice = json.loads(text)
            resource = notice["resource"]
            if resource.get("algorithm") != "AEAD_AES_256_GCM":
                raise ValueError(f"unsupported algorithm {resource.get('algorithm')!r}")
            plain = aes_decrypt(
                resource["nonce"],
                resource["ciphertext"],
                resource.get("associated_data") or "",
                self._apiv3_key,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise WebhookRefused("malformed", f"not a WeChat Pay notification: {exc}") from exc
        if plain is None:
            raise WebhookRefused("undecryptable", "the resource does not decrypt with our API v3 key")
        try:
            return _normalise(notice, json.loads(plain))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise WebhookRefused("malformed", f"WeChat Pay resource without {exc}") from exc


def _normalise(notice: dict[str, Any], resource: dict[str, Any]) -> PaymentEvent | None:
    event_type = notice["event_type"]
    amount = resource["amount"]
    if event_type == "TRANSACTION.SUCCESS" and resource.get("trade_state") == "SUCCESS":
        kind, amount_minor = EventKind.SUCCEEDED, amount["total"]
    elif event_type == "REFUND.SUCCESS" and resource.get("refund_status") == "SUCCESS":
        kind, amount_minor = EventKind.REFUNDED, amount["refund"]
    else:
        return None  # refunds closed or abnormal, other notices: no money moved
    if not isinstance(amount_minor, int) or isinstance(amount_minor, bool):
        raise TypeError(f"an integer amount, got {amount_minor!r}")
    return PaymentEvent(
        provider_event_id=str(notice["id"]),
        kind=kind,
        provider_payment_id=str(resource["transaction_id"]),
        reference=str(resource["out_trade_no"]),
        amount_minor=amount_minor,
        # Refund notices carry no currency; WeChat Pay settles merchants in CNY unless the order said otherwise.
        currency=str(amount.get("currency") or "CNY"),
        detail=str(resource.get("trade_state_desc") or resource.get("user_received_account") or ""),
    )
