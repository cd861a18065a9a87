"""What a running service holds: settings, store, catalogue, cursor secret, auth limiter. Built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from .analytics import TtlCache
from .catalog import Catalog
from .keys import FailedAuthLimiter, KeyRateLimiter, LastUsedTracker
from .settings import Settings
from .store.sql import SqlStore


@dataclass
class Services:
    settings: Settings
    store: SqlStore
    catalog: Catalog
    cursor_secret: bytes
    auth_limiter: FailedAuthLimiter
    last_used: LastUsedTracker
    key_rate: KeyRateLimiter
    analytics_cache: TtlCache

    @classmethod
    def build(cls, settings: Settings, store: SqlStore | None = None, catalog: Catalog | None = None) -> "Services":
        store = store or SqlStore(settings.database_url)
        catalog = catalog or Catalog.load(settings.catalog)
        secret = settings.cursor_secret or store.meta("cursor_secret")
        if not secret:
            raise RuntimeError("the database has no cursor secret: run `usage-ledger migrate`")
        return cls(
            settings=settings, store=store, catalog=catalog, cursor_secret=secret.encode(),
            auth_limiter=FailedAuthLimiter(settings.auth_failure_limit, settings.auth_failure_window_seconds,
                                           settings.auth_block_seconds),
            last_used=LastUsedTracker(settings.last_used_write_interval_seconds * 1000),
            analytics_cache=TtlCache(settings.analytics_cache_seconds),
            key_rate=KeyRateLimiter(settings.key_rate_limit_per_minute),
        )
