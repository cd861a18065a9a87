"""Typed settings, read from USAGE_LEDGER_* environment variables (and an optional .env)."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./usage-ledger.db"
MIN_OPERATOR_TOKEN_LENGTH = 32


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="USAGE_LEDGER_", env_file=".env", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    operator_token: str | None = None
    catalog: str | None = Field(default=None, description="path to a catalogue TOML; the packaged one when unset")
    cursor_secret: str | None = Field(default=None, description="signs cursors; kept in the database when unset")
    cursor_max_age_seconds: int = 24 * 3600
    # API.md §1: 20 failed authentications within 30 s block the address for 30 s; 0 switches it off.
    auth_failure_limit: int = 20
    auth_failure_window_seconds: int = 30
    auth_block_seconds: int = 30
    # Requests a minute per user key on /billing and /api_keys; the operator's ingest is bounded by size instead.
    key_rate_limit_per_minute: int = 600
    max_body_bytes: int = 8 * 1024 * 1024
    body_timeout_seconds: float = 30.0
    max_batch_records: int = 1000
    last_used_write_interval_seconds: int = 60
    # API.md §5: analytics answers are cached per (user, parameters); 0 switches the cache off (benchmarks).
    analytics_cache_seconds: int = 600

    @field_validator("database_url")
    @classmethod
    def _known_engine(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg://")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value

    def require_operator_token(self) -> str:
        """`serve` refuses to start without a strong operator token (API.md §8)."""
        token = self.operator_token
        if not token:
            raise ValueError("USAGE_LEDGER_OPERATOR_TOKEN is not set (at least 32 characters)")
        if len(token) < MIN_OPERATOR_TOKEN_LENGTH:
            raise ValueError(f"USAGE_LEDGER_OPERATOR_TOKEN is too short: at least {MIN_OPERATOR_TOKEN_LENGTH} characters")
        return token
