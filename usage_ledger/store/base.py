"""The narrow interface the domain and the API use; one module per engine implements it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

# Column order of a usage row as the store hands it out (see usage.py for rendering).
ROW_COLUMNS = ("id", "ts", "sku", "price", "units", "amount", "currency", "notes", "request_id", "exec_ms",
               "prompt_tokens", "completion_tokens")


class UsageRow(NamedTuple):
    id: int
    ts: int
    sku: str
    price: int
    units: int
    amount: int
    currency: int
    notes: str
    request_id: str | None
    exec_ms: int | None
    prompt_tokens: int | None
    completion_tokens: int | None


@dataclass(frozen=True, slots=True)
class UsageFilter:
    """Rows of one user, optionally one currency, with ts in [start, end) (ms; None is unbounded)."""
    uid: int
    currency: int | None = None
    start: int | None = None
    end: int | None = None


@dataclass(slots=True)
class AnalyticsBuckets:
    """Rollup sums per requested day (an index into the day bounds asked for)."""
    by_currency: list[tuple[int, int, int]]  # day, currency, spend
    by_sku: list[tuple[int, str, int, int, int]]  # day, sku, currency, spend, units (nano billing units)
    by_key: list[tuple[int, int, int, int, int]]  # day, kid (0 = none), currency, spend, natural units (milli)


@dataclass(frozen=True, slots=True)
class User:
    uid: int
    user_id: str
    name: str
    created_at: int


@dataclass(frozen=True, slots=True)
class ApiKey:
    kid: int
    id: str
    uid: int
    api_key_type: str
    description: str
    last6: str
    created_at: int
    expires_at: int | None
    last_used_at: int | None
    revoked_at: int | None
    limit_usd: str | None
    limit_diem: str | None
    limit_vcu: str | None
    limit_period: str
    model_privacy: str


class StoreError(RuntimeError):
    """The store could not do what was asked (unreachable, locked past its timeout, ...)."""


class Conflict(StoreError):
    """A unique value (user id, key) is taken."""
