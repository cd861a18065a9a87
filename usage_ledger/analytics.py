"""/billing/usage-analytics (API.md §5): calendar days in a timezone, and rollup buckets folded into them.

Pure: the store hands over bucket sums (hourly or daily, see AnalyticsBuckets), this module cuts them into the
requested days and renders Venice's eight keys. Spend is the debit rows' −amount in USD and BUNDLED_CREDITS (both
shown as USD) and DIEM; credits, refunds and VCU are not spend.
"""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Hashable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .catalog import Catalog, unit_scale
from .money import CURRENCY_CODES, nano_to_decimal
from .store.base import AnalyticsBuckets, ApiKey
from .timeutil import MS_PER_DAY, MS_PER_HOUR, to_ms

MAX_DAYS = 90
DEFAULT_LOOKBACK = "7d"
TOP_N = 8
OTHER = "Other"
WEB_APP = "Web App"
_DIEM = CURRENCY_CODES["DIEM"]
_LOOKBACK = re.compile(r"^[1-9]\d*d$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class AnalyticsParamError(ValueError):
    def __init__(self, fields: dict[str, list[str]]) -> None:
        super().__init__(str(fields))
        self.fields = fields


@dataclass(frozen=True)
class DayRange:
    """Calendar days in a zone; bounds[i] is day i's start in UTC ms, floored to the whole hour (so that hourly
    rollups can serve zones whose offset is not a whole hour), and bounds[-1] the end of the last day."""
    label: str
    zone: str
    days: tuple[date, ...]
    bounds: tuple[int, ...]
    midnights: tuple[int, ...]  # each day's true local midnight, for byModelDaily / byKeyDaily "date"

    @property
    def daily_grain(self) -> bool:
        """UTC-aligned days can be read from the daily rollups; any other cut needs the hourly ones."""
        return all(b % MS_PER_DAY == 0 for b in self.bounds)

    @property
    def cache_key(self) -> Hashable:
        return (self.label, self.zone, self.bounds[0], self.bounds[-1])


def _zone(name: str, errors: dict) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        errors["timezone"] = [f"timezone '{name[:64]}' is not a known IANA time zone"]
        return None


def _date(name: str, text: str, errors: dict) -> date | None:
    if not _DATE.match(text):
        errors[name] = [f"{name} must be a date YYYY-MM-DD"]
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        errors[name] = [f"{name} is not a valid date: {exc}"]
        return None


def resolve_range(lookback: str | None, start: str | None, end: str | None, zone_name: str, now_ms: int) -> DayRange:
    errors: dict[str, list[str]] = {}
    zone = _zone(zone_name, errors)
    if start is not None or end is not None:
        if start is None:
            errors["startDate"] = ["startDate is required with endDate"]
        if end is None:
            errors["endDate"] = ["endDate is required with startDate"]
        first = _date("startDate", start, errors) if start is not None else None
        last = _date("endDate", end, errors) if end is not None else None
        if first and first.year < 1970:
            errors["startDate"] = ["startDate must be in 1970 or later"]
        if last and last.year > 9998:
            errors["endDate"] = ["endDate must be before 9999"]
        if first and last and not errors:
            if last < first:
                errors["endDate"] = ["endDate must not be before startDate"]
            elif (last - first).days + 1 > MAX_DAYS:
                errors["endDate"] = [f"the range is at most {MAX_DAYS} days, counting both ends"]
        if errors:
            raise AnalyticsParamError(errors)
        label = f"{start}:{end}"
    else:
        lookback = lookback or DEFAULT_LOOKBACK
        if not _LOOKBACK.match(lookback):
            errors["lookback"] = ["lookback must be a number of days such as 7d (at most 90d)"]
        if errors:
            raise AnalyticsParamError(errors)
        n = min(int(lookback[:-1]), MAX_DAYS)
        last = datetime.fromtimestamp(now_ms / 1000, zone).date()
        first = last - timedelta(days=n - 1)
        label = f"{n}d"
    days = tuple(first + timedelta(days=i) for i in range((last - first).days + 1))
    midnights = tuple(to_ms(datetime(d.year, d.month, d.day, tzinfo=zone).astimezone(timezone.utc))
                      for d in (*days, last + timedelta(days=1)))
    bounds = tuple(m - m % MS_PER_HOUR for m in midnights)
    return DayRange(label, zone_name, days, bounds, midnights[:-1])


@dataclass
class _Total:
    """Integer sums (nano-units; natural units in billionths), turned into decimals once, when rendered."""
    usd: int = 0
    diem: int = 0
    units: int = 0
    daily: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, day: int, currency: int, spend: int, units: int) -> None:
        if currency == _DIEM:
            self.diem += spend
        else:
            self.usd += spend
        self.units += units
        self.daily[day] += spend

    @property
    def spend(self) -> int:
        return self.usd + self.diem


def _money(n: int) -> Decimal:
    """Billionths (nano-units of money, or of natural units) as the exact decimal they are."""
    return nano_to_decimal(n)


def _top(totals: dict[str, _Total], r: DayRange) -> tuple[list[str], list[dict[str, Any]]]:
    """The 8 biggest names (plus "Other" for the rest) and their spend day by day, zero-filled."""
    ranked = sorted(totals, key=lambda name: (-totals[name].spend, name))
    top, rest = ranked[:TOP_N], ranked[TOP_N:]
    names = top + ([OTHER] if rest else [])
    series = []
    for i, midnight in enumerate(r.midnights):
        entry: dict[str, Any] = {"date": midnight}
        for name in top:
            entry[name] = _money(totals[name].daily.get(i, 0))
        if rest:
            entry[OTHER] = _money(sum(totals[name].daily.get(i, 0) for name in rest))
        series.append(entry)
    return names, series


def _unique(labels: dict[Any, str], suffix) -> dict[Any, str]:
    """A label shared by several ids gets the id's suffix, within this one answer."""
    count: dict[str, int] = defaultdict(int)
    for label in labels.values():
        count[label] += 1
    return {key: f"{label}{suffix(key)}" if count[label] > 1 else label for key, label in labels.items()}


def build(r: DayRange, buckets: AnalyticsBuckets, catalog: Catalog, keys: dict[int, ApiKey]) -> dict[str, Any]:
    by_date = [[0, 0] for _ in r.days]  # USD (with bundled credits), DIEM
    for i, currency, spend in buckets.by_currency:
        by_date[i][currency == _DIEM] += spend

    models: dict[str, _Total] = defaultdict(_Total)
    breakdowns: dict[str, dict[str, _Total]] = defaultdict(lambda: defaultdict(_Total))
    model_info: dict[str, tuple[str, str | None, str]] = {}
    sku_info: dict[str, tuple[str, str, int]] = {}  # sku -> model id, breakdown type, unit scale
    for i, sku, currency, spend, units in buckets.by_sku:
        known = sku_info.get(sku)
        if known is None:
            info = catalog.sku(sku)
            model_id = info.model_id if info else sku
            known = sku_info[sku] = (model_id, info.breakdown if info else "Usage", unit_scale(sku))
            if model_id not in model_info:
                model_info[model_id] = ((info.model_name, info.model_type, info.unit_type) if info
                                        else (sku, None, _unit_type(sku)))
        model_id, kind, scale = known
        natural = units * scale  # billionths of a token, character, second or image
        models[model_id].add(i, currency, spend, natural)
        breakdowns[model_id][kind].add(i, currency, spend, natural)
    names = _unique({m: model_info[m][0] for m in models}, lambda m: f" ({m})")
    by_model = []
    for model_id in sorted(models, key=lambda m: (-models[m].spend, names[m])):
        total = models[model_id]
        _, model_type, unit_type = model_info[model_id]
        entry: dict[str, Any] = {"modelName": names[model_id], "unitType": unit_type, "modelType": model_type,
                                 "totalUsd": _money(total.usd), "totalDiem": _money(total.diem),
                                 "totalUnits": _money(total.units)}
        parts = breakdowns[model_id]
        if len(parts) > 1:
            entry["breakdown"] = [{"type": kind, "usd": _money(p.usd), "diem": _money(p.diem),
                                   "units": _money(p.units)}
                                  for kind, p in sorted(parts.items(), key=lambda kv: (-kv[1].spend, kv[0]))]
        by_model.append(entry)
    top_models, model_daily = _top({names[m]: t for m, t in models.items()}, r)

    key_totals: dict[int, _Total] = defaultdict(_Total)
    for i, kid, currency, spend, units_milli in buckets.by_key:
        key_totals[kid].add(i, currency, spend, units_milli * 1_000_000)
    labels = _unique({kid: _key_label(keys.get(kid)) for kid in key_totals},
                     lambda kid: f" ...{keys[kid].last6}" if kid in keys else "")
    by_key = []
    for kid in sorted(key_totals, key=lambda k: (-key_totals[k].spend, labels[k])):
        total = key_totals[kid]
        key = keys.get(kid)
        by_key.append({"apiKeyId": key.id if key else None, "description": labels[kid],
                       "totalUsd": _money(total.usd), "totalDiem": _money(total.diem),
                       "totalUnits": _money(total.units)})
    top_keys, key_daily = _top({labels[k]: t for k, t in key_totals.items()}, r)

    return {
        "lookback": r.label,
        "byDate": [{"date": d.isoformat(), "USD": _money(usd), "DIEM": _money(diem)}
                   for d, (usd, diem) in zip(r.days, by_date)],
        "byModel": by_model, "byModelDaily": model_daily, "topModels": top_models,
        "byKey": by_key, "byKeyDaily": key_daily, "topKeyNames": top_keys,
    }


def _key_label(key: ApiKey | None) -> str:
    if key is None:
        return WEB_APP
    return key.description or f"Key ...{key.last6}"


_UNIT_TYPES = (("-mtoken", "tokens"), ("-mchar", "chars"), ("-kchar", "chars"), ("-second", "seconds"),
               ("-unit", "images"))


def _unit_type(sku: str) -> str:
    """For SKUs outside the catalogue (charged with an explicit price), read the unit off the SKU's suffix."""
    return next((unit for suffix, unit in _UNIT_TYPES if sku.endswith(suffix)), "units")


class TtlCache:
    """Answers per (user, parameters) for `ttl` seconds; the lock guards the dict only, never a computation, so
    neither readers nor ingest ever wait on it."""

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self._entries: dict[Hashable, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        if self.ttl <= 0:
            return None
        with self._lock:
            found = self._entries.get(key)
        if found is None or found[0] < time.monotonic():
            return None
        return found[1]

    def put(self, key: Hashable, value: Any) -> None:
        if self.ttl <= 0:
            return
        now = time.monotonic()
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries = {k: v for k, v in self._entries.items() if v[0] >= now}
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()
            self._entries[key] = (now + self.ttl, value)
