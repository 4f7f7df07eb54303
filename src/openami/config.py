"""One typed Settings object (env prefix OPENAMI_): database, broker, limits, the API address and the master keys."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_PATH = Path("var") / "openami.db"
# Embedded mode only: the master key made on first use when none is configured, next to the default database.
DEFAULT_MASTER_KEY_PATH = DEFAULT_SQLITE_PATH.parent / "master.key"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPENAMI_", env_file=None, extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{DEFAULT_SQLITE_PATH}",
        description="SQLAlchemy URL. SQLite (embedded default) or postgresql+psycopg://...",
    )
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_topic_root: str = "openami/v1"
    mqtt_share_group: str = "headend"
    mqtt_client_id: str | None = None
    # Frames stamped further than this from the head-end clock are refused.
    max_clock_skew_s: int = 300
    max_reading_age_days: int = 400
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    log_level: str = "INFO"
    # The master keys that seal every meter's frame-authentication key at rest (security.meter_keys).
    # SecretStr keeps them out of reprs and logs; they are parsed by `security.meter_keys`, not here, so that
    # a malformed value is reported by position without echoing it (pydantic's errors quote the input).
    master_keys: SecretStr | None = Field(
        default=None,
        description="Comma-separated `id:base64` entries (32-byte AES keys), newest first: the newest seals, "
        "any opens. `openami keys generate` makes one.",
    )
    master_key_file: Path | None = Field(
        default=None,
        description="A file of `id:base64` entries, one per line, newest first (instead of master_keys). "
        f"Embedded (SQLite) default when neither is set: {DEFAULT_MASTER_KEY_PATH}, created on first use.",
    )
    # Online payment (prepayment.providers). The sandbox is always there (the demo pays with it); its secret
    # signs its webhooks and checkout links. Unset, each process makes its own, which is right for one process
    # (embedded mode, tests) and wrong for several: set it in server mode.
    payment_sandbox_secret: SecretStr | None = Field(
        default=None, description="At least 16 bytes of text signing the sandbox provider's webhooks."
    )
    public_base_url: str = Field(
        default="",
        description="Where customers reach the API (for checkout links), e.g. https://ami.example.org",
    )
    stripe_api_key: SecretStr | None = None  # Stripe is offered when both of these are set
    stripe_webhook_secret: SecretStr | None = None
    # WeChat Pay API v3 (Native, a QR code to scan) is offered when all of these are set; some but not all set is
    # a configuration error naming the missing ones (bootstrap.payment_providers). The platform key is WeChat Pay's
    # "platform public key" (or platform certificate) that signs its notifications, named by its serial/ID.
    wechatpay_mchid: str | None = Field(default=None, description="WeChat Pay merchant id (mchid)")
    wechatpay_appid: str | None = Field(default=None, description="the AppID the merchant is bound to")
    wechatpay_apiv3_key: SecretStr | None = Field(
        default=None, description="the API v3 key (32 bytes): decrypts notifications' resources"
    )
    wechatpay_merchant_serial: str | None = Field(
        default=None, description="serial number of the merchant's API certificate"
    )
    wechatpay_merchant_private_key_file: Path | None = Field(
        default=None, description="PEM RSA private key of the merchant's API certificate (apiclient_key.pem)"
    )
    wechatpay_platform_public_key_file: Path | None = Field(
        default=None,
        description="PEM public key (or certificate) of WeChat Pay's platform, verifying webhooks",
    )
    wechatpay_platform_serial: str | None = Field(
        default=None, description="the platform key's ID or certificate serial (the Wechatpay-Serial header)"
    )
    wechatpay_notify_url: str | None = Field(
        default=None,
        description="where WeChat Pay sends notifications: <public base>/api/v1/payments/webhooks/wechatpay",
    )
    # Notification channels (notifications.channels). Webhooks and apprise URLs need no settings; e-mail is
    # offered when an SMTP host is set, web push when a VAPID key and subject are. A channel not offered refuses
    # subscriptions to it.
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_sender: str = "openami <alerts@openami.invalid>"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    vapid_private_key_file: Path | None = Field(
        default=None, description="PEM EC P-256 private key signing web push requests (VAPID, RFC 8292)."
    )
    vapid_subject: str = Field(default="", description="mailto: or https: contact sent with web pushes")


def get_settings() -> Settings:
    return Settings()
