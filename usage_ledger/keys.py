"""API keys: secrets, hashes, roles, and the key's wire shape (API.md §6)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from decimal import Decimal

from .money import nano_to_decimal, render_fixed, to_nano
from .store.base import ApiKey
from .timeutil import iso_ms

KEY_TYPES = ("ADMIN", "INFERENCE")
LIMIT_PERIODS = ("EPOCH", "MONTH", "LIFETIME")
MODEL_PRIVACY = ("ALL", "PRIVATE_TEXT", "PRIVATE_ONLY")
MAX_ACTIVE_KEYS = 500
MAX_DESCRIPTION = 64
SECRET_PREFIX = "ul_"


def new_secret() -> str:
    """32 random bytes (256 bits), URL-safe."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> bytes:
    # The secret carries 256 bits of entropy, so a fast hash is enough: nothing can be guessed through it.
    return hashlib.sha256(secret.encode()).digest()


def same_secret(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def _limit(value: str | None):
    return None if value is None else Decimal(value)


def consumption_limits(key: ApiKey) -> dict:
    return {"usd": _limit(key.limit_usd), "diem": _limit(key.limit_diem), "vcu": _limit(key.limit_vcu)}


def key_json(key: ApiKey) -> dict:
    return {"id": key.id, "apiKeyType": key.api_key_type, "description": key.description, "last6Chars": key.last6,
            "createdAt": iso_ms(key.created_at), "expiresAt": None if key.expires_at is None else iso_ms(key.expires_at),
            "lastUsedAt": None if key.last_used_at is None else iso_ms(key.last_used_at),
            "consumptionLimits": consumption_limits(key), "limitPeriod": key.limit_period,
            "modelPrivacy": key.model_privacy}


def trailing_usage_json(spend: dict[str, int]) -> dict:
    """Venice sends these sums as strings with 4 decimals; usd includes bundled credits."""
    return {"trailingSevenDays": {"usd": render_fixed(spend.get("USD", 0) + spend.get("BUNDLED_CREDITS", 0), 4),
                                  "diem": render_fixed(spend.get("DIEM", 0), 4),
                                  "vcu": render_fixed(spend.get("VCU", 0), 4)}}


def limit_text(value) -> str | None:
    """A consumption limit as stored: exact decimal text."""
    if value is None:
        return None
    return format(nano_to_decimal(to_nano(value, "limit")).normalize(), "f")


class FailedAuthLimiter:
    """API.md §1: after `limit` failed authentications from one address within `window` s, block it `block` s."""

    def __init__(self, limit: int, window: float, block: float) -> None:
        self.limit, self.window, self.block = limit, window, block
        self._failures: dict[str, deque] = {}
        self._blocked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> int:
        """Seconds until the address may try again; 0 when it is not blocked."""
        if self.limit <= 0:
            return 0
        until = self._blocked_until.get(address)
        if until is None:
            return 0
        left = until - time.monotonic()
        if left <= 0:
            with self._lock:
                self._blocked_until.pop(address, None)
            return 0
        return max(1, int(left + 0.999))

    def failed(self, address: str) -> None:
        if self.limit <= 0:
            return
        now = time.monotonic()
        with self._lock:
            failures = self._failures.setdefault(address, deque())
            failures.append(now)
            while failures and failures[0] <= now - self.window:
                failures.popleft()
            if len(failures) >= self.limit:
                self._blocked_until[address] = now + self.block
                failures.clear()
            if len(self._failures) > 100_000:  # bounded memory under a spray of addresses
                self._failures = {a: f for a, f in self._failures.items() if f and f[-1] > now - self.window}


class KeyRateLimiter:
    """Per-key token buckets: `per_minute` requests a minute, with bursts up to the same number. 0 switches it off."""

    def __init__(self, per_minute: int) -> None:
        self.limit = per_minute
        self._buckets: dict[int, tuple[float, float]] = {}  # kid -> (tokens, monotonic time of that count)
        self._lock = threading.Lock()

    def take(self, kid: int) -> tuple[int, int]:
        """(remaining requests, seconds to wait); a wait above 0 means refused."""
        if self.limit <= 0:
            return 0, 0
        rate = self.limit / 60.0
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(kid, (float(self.limit), now))
            tokens = min(float(self.limit), tokens + (now - then) * rate)
            if tokens < 1:
                self._buckets[kid] = (tokens, now)
                return 0, max(1, int((1 - tokens) / rate + 0.999))
            self._buckets[kid] = (tokens - 1, now)
            return int(tokens - 1), 0


class LastUsedTracker:
    """lastUsedAt is written at most once per interval per key, never a write per request."""

    def __init__(self, interval_ms: int) -> None:
        self.interval_ms = interval_ms
        self._written: dict[int, int] = {}
        self._lock = threading.Lock()

    def due(self, kid: int, stored: int | None, now: int) -> bool:
        with self._lock:
            last = max(self._written.get(kid, 0), stored or 0)
            if now - last < self.interval_ms:
                return False
            self._written[kid] = now
            return True
