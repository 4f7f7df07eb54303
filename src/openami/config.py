"""One typed Settings object (env prefix OPENAMI_): database, broker, limits and the API address."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_PATH = Path("var") / "openami.db"


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


def get_settings() -> Settings:
    return Settings()
