"""The one composition root: API, CLI, workers and tests build the system here.

Tests pass fakes (a ManualClock, a test database URL, an engine) in rather than patching internals.
"""

from __future__ import annotations

import gc
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from openami.billing.service import BillingService
from openami.common.clock import Clock, SystemClock
from openami.common.errors import ConfigurationError, ValidationError
from openami.config import Settings
from openami.control.service import ControlService
from openami.headend.collection import CollectionJobs
from openami.headend.service import HeadEnd
from openami.headend.transport import Transport
from openami.ledger.service import LedgerService
from openami.notifications.channels import (
    AppriseChannel,
    Channel,
    EmailChannel,
    WebhookChannel,
    WebPushChannel,
)
from openami.notifications.interfaces import ChannelKind
from openami.notifications.service import NotificationService
from openami.outbox.service import OutboxService
from openami.prepayment.credited import PaymentCreditedEmitter
from openami.prepayment.payments import PaymentService
from openami.prepayment.providers import PaymentProvider
from openami.prepayment.providers.sandbox import SandboxProvider
from openami.prepayment.providers.stripe_provider import StripeProvider
from openami.prepayment.providers.wechatpay import WeChatPayProvider
from openami.prepayment.tokens import TokenService
from openami.prepayment.wallet import WalletService
from openami.readings.service import ReadingsService
from openami.registry.service import RegistryService
from openami.security.audit import AuditLog
from openami.security.meter_keys import MeterKeyCipher
from openami.storage.db import make_engine, make_session_factory


@dataclass
class Container:
    settings: Settings
    clock: Clock
    engine: Engine
    session_factory: sessionmaker[Session]
    meter_keys: MeterKeyCipher  # seals meter keys at rest under the configured master keys
    registry: RegistryService
    readings: ReadingsService
    ledger: LedgerService
    outbox: OutboxService
    payments: PaymentService  # the sandbox provider always; Stripe when configured
    control: ControlService  # relay commands, the safety policy, supply protections, weather emergencies
    wallets: WalletService  # prepaid wallets and a site's credit rules
    tokens: TokenService  # OpenPAYGo offline tokens: a site's token unit, provisioning meters, issuing tokens
    notifications: NotificationService  # the channels `notification_channels(settings)` configures

    def headend(self, transport: Transport | None = None) -> HeadEnd:
        """A head-end storing through this container's readings service; serving `transport` when given."""
        headend = HeadEnd(
            self.session_factory, self.readings, self.clock, self.settings, meters=self.registry
        )
        if transport is not None:
            headend.serve(transport)
        return headend

    def collection_jobs(self, headend: HeadEnd) -> CollectionJobs:
        return CollectionJobs(self.session_factory, self.readings, headend)

    def close(self) -> None:
        self.engine.dispose()


def bootstrap(
    settings: Settings | None = None,
    clock: Clock | None = None,
    engine: Engine | None = None,
    meter_keys: MeterKeyCipher | None = None,
) -> Container:
    """The system for `settings`. Raises ConfigurationError when the server mode (PostgreSQL) has no master key
    configured for meter keys (the embedded mode makes one on first use; see security.meter_keys)."""
    settings = settings or Settings()
    clock = clock or SystemClock()
    meter_keys = meter_keys or MeterKeyCipher.from_settings(settings)
    engine = engine or make_engine(settings.database_url)
    registry = RegistryService(clock, meter_keys)
    ledger = LedgerService(clock, registry)
    audit_log = AuditLog(clock)
    outbox = OutboxService(clock)
    return Container(
        settings=settings,
        clock=clock,
        engine=engine,
        session_factory=make_session_factory(engine),
        meter_keys=meter_keys,
        registry=registry,
        readings=ReadingsService(
            clock,
            registry,
            max_clock_skew=timedelta(seconds=settings.max_clock_skew_s),
            max_reading_age=timedelta(days=settings.max_reading_age_days),
        ),
        ledger=ledger,
        outbox=outbox,
        payments=PaymentService(
            clock,
            registry,
            ledger,
            payment_providers(settings, clock),
            audit_log=audit_log,
            observers=[PaymentCreditedEmitter(outbox)],  # the worker then records the top-up on the wallet
        ),
        control=ControlService(clock, registry, audit_log),
        wallets=WalletService(clock, registry, ledger, BillingService(clock, registry, ledger), audit_log),
        tokens=TokenService(clock, registry, meter_keys),
        notifications=NotificationService(clock, registry, audit_log, notification_channels(settings, clock)),
    )


def notification_channels(settings: Settings, clock: Clock) -> dict[ChannelKind, Channel]:
    """The channels `settings` configure: webhooks and apprise URLs always, e-mail with an SMTP host, web push
    with a VAPID key file and subject (ValidationError for a key that is not one, ConfigurationError for a file
    that cannot be read)."""
    channels: dict[ChannelKind, Channel] = {
        ChannelKind.WEBHOOK: WebhookChannel(clock),
        ChannelKind.APPRISE: AppriseChannel(),
    }
    if settings.smtp_host:
        password = settings.smtp_password
        channels[ChannelKind.EMAIL] = EmailChannel(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_sender,
            username=settings.smtp_username,
            password=None if password is None else password.get_secret_value(),
            starttls=settings.smtp_starttls,
        )
    if settings.vapid_private_key_file is not None and settings.vapid_subject:
        try:
            pem = settings.vapid_private_key_file.read_bytes()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the VAPID key file {settings.vapid_private_key_file}: {exc.strerror}"
            ) from exc
        channels[ChannelKind.WEB_PUSH] = WebPushChannel(pem, settings.vapid_subject)
    return channels


def payment_providers(settings: Settings, clock: Clock) -> list[PaymentProvider]:
    """The providers `settings` configure: the sandbox always, Stripe when its key and endpoint secret are set,
    WeChat Pay when all its settings are (`WECHATPAY_SETTINGS`). ConfigurationError, naming the setting, for
    WeChat Pay settings given in part, a key file that cannot be read or a key that is not one."""
    configured = settings.payment_sandbox_secret
    secret = configured.get_secret_value().encode() if configured else secrets.token_bytes(32)
    base = settings.public_base_url.rstrip("/")
    providers: list[PaymentProvider] = [SandboxProvider(secret, clock, base_url=base)]
    if settings.stripe_api_key and settings.stripe_webhook_secret:
        providers.append(
            StripeProvider(
                settings.stripe_api_key.get_secret_value(),
                settings.stripe_webhook_secret.get_secret_value(),
                success_url=f"{base}/payments/done",
                cancel_url=f"{base}/payments/cancelled",
            )
        )
    wechatpay = wechatpay_provider(settings)
    if wechatpay is not None:
        providers.append(wechatpay)
    return providers


# Every one is needed: the merchant id, AppID, merchant serial and private key open checkouts, the platform key
# and the API v3 key verify and decrypt notifications, and WeChat Pay sends them to the notify URL.
WECHATPAY_SETTINGS = (
    "wechatpay_mchid",
    "wechatpay_appid",
    "wechatpay_apiv3_key",
    "wechatpay_merchant_serial",
    "wechatpay_merchant_private_key_file",
    "wechatpay_platform_public_key_file",
    "wechatpay_platform_serial",
    "wechatpay_notify_url",
)
# Which setting a WeChatPayProvider ValidationError's location is about.
_WECHATPAY_KEY_SETTINGS = {
    "wechat pay API v3 key": "wechatpay_apiv3_key",
    "wechat pay platform key": "wechatpay_platform_public_key_file",
    "wechat pay merchant private key": "wechatpay_merchant_private_key_file",
}


def _env_name(setting: str) -> str:
    return f"OPENAMI_{setting.upper()}"


def wechatpay_provider(settings: Settings) -> WeChatPayProvider | None:
    """WeChat Pay from `settings`: None when none of WECHATPAY_SETTINGS is set, the provider when all are."""
    values = {name: getattr(settings, name) for name in WECHATPAY_SETTINGS}
    given = [
        name
        for name, value in values.items()
        if value is not None
        and (value.get_secret_value() if isinstance(value, SecretStr) else str(value)).strip()
    ]
    if not given:
        return None
    missing = [name for name in WECHATPAY_SETTINGS if name not in given]
    if missing:
        raise ConfigurationError(
            f"WeChat Pay is configured in part: {', '.join(map(_env_name, missing))} "
            f"{'is' if len(missing) == 1 else 'are'} not set (set all of {', '.join(map(_env_name, given))} "
            "and these, or none)"
        )
    notify_url = str(values["wechatpay_notify_url"])
    if not notify_url.startswith("https://"):
        raise ConfigurationError(
            f"{_env_name('wechatpay_notify_url')} must be an https:// URL (WeChat Pay calls only those), "
            f"got {notify_url!r}"
        )

    def read(setting: str) -> str:
        path = values[setting]
        try:
            return Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not a text (PEM) file"
            raise ConfigurationError(f"{_env_name(setting)}: cannot read the key file {path}: {why}") from exc

    apiv3_key = settings.wechatpay_apiv3_key  # set: checked above
    try:
        return WeChatPayProvider(
            apiv3_key="" if apiv3_key is None else apiv3_key.get_secret_value(),
            platform_public_key=read("wechatpay_platform_public_key_file"),
            platform_serial=str(values["wechatpay_platform_serial"]),
            notify_url=notify_url,
            mchid=str(values["wechatpay_mchid"]),
            appid=str(values["wechatpay_appid"]),
            merchant_private_key=read("wechatpay_merchant_private_key_file"),
            merchant_serial=str(values["wechatpay_merchant_serial"]),
        )
    except ValidationError as exc:
        setting = _WECHATPAY_KEY_SETTINGS.get(exc.location or "")
        where = _env_name(setting) if setting else "WeChat Pay settings"
        raise ConfigurationError(f"{where}: {exc.message}") from exc


def tune_gc_for_ingestion() -> None:
    """For long-running ingesting processes (worker, demo): fewer, later garbage collections.

    Ingestion allocates many short-lived values per reading; Python's default young-generation threshold
    (700) makes it scan them again and again, about a quarter of the time per reading here (`make bench`).
    Objects alive after start-up are frozen out of collection altogether. Memory stays bounded: the
    threshold only delays collecting the young generation, it does not stop it.
    """
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
