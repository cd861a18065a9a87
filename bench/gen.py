"""Deterministic benchmark data: users, their API keys, and a year of usage records in arrival order.

Everything is a function of (Sizes, seed, anchor): the same arguments give the same users, keys, secrets and
records, byte for byte. Records are what the platform would POST to /ledger/records (inference events priced from
the catalogue, credits, a few legacy VCU imports), so loading them through ledger.record produces the rows, balances
and rollups that real ingest would.

Shape of the data (the issue's defaults):
- 1,000 users; user 0 is the heavy user with ~2,000,000 rows, the others share the rest with a skewed split;
- 365 days ending at `anchor` (the start of the current UTC day by default), busier on weekdays and afternoons,
  growing over the year; 30% of the light users join part-way through;
- 1 to 10 API keys per user (the heavy user has 10), a share of usage without a key (the web app);
- a realistic SKU mix: chat models from the catalogue (input, output, cache read and write SKUs) on a Zipf-like
  popularity, embeddings, images, TTS and ASR;
- every currency: daily DIEM allocations and bundled credits are spent first (the ledger's spend order), then USD;
  early rows of some users are legacy VCU imports;
- rows sharing a millisecond: an event's SKUs share its timestamp, and ~5% of events are bursts at the same ms;
- ~1% of records are backfilled: they arrive 1 to 30 days after their timestamp.
"""

from __future__ import annotations

import hashlib
import math
import random
import uuid
from bisect import bisect
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import accumulate
from typing import Any, Iterator

from usage_ledger.catalog import Catalog
from usage_ledger.timeutil import MS_PER_DAY, MS_PER_HOUR

SEED = 20260822
NOTES = "API Inference"
BACKFILL_SHARE = 0.01
BURST_SHARE = 0.05
NO_KEY_SHARE = 0.05
VCU_DAYS = 45  # legacy VCU imports happen in the first weeks of the year
VCU_SHARE = 0.03


@dataclass(frozen=True)
class Sizes:
    users: int = 1000
    heavy_rows: int = 2_000_000
    total_rows: int = 10_000_000
    days: int = 365
    ingest_records: int = 100_000  # the separate set for the ingest figures (fresh database)

    @classmethod
    def quick(cls) -> "Sizes":
        return cls(users=20, heavy_rows=20_000, total_rows=50_000, days=365, ingest_records=4_000)


@dataclass(frozen=True)
class BenchKey:
    id: str
    secret: str
    api_key_type: str
    description: str


@dataclass
class BenchUser:
    index: int
    user_id: str
    name: str
    keys: list[BenchKey]
    target_rows: int
    join_day: int
    stakes_diem: bool  # gets a daily DIEM allocation
    diem_daily: Decimal = Decimal(0)  # credits, sized to the user's spend once its mix is known
    bundled_monthly: Decimal = Decimal(0)
    usd_monthly: Decimal = Decimal(0)
    models: list[tuple[str, str]] = field(default_factory=list)  # (kind, model id)
    model_weights: list[float] = field(default_factory=list)

    @property
    def admin_key(self) -> BenchKey:
        return next(k for k in self.keys if k.api_key_type == "ADMIN")


# -- the catalogue's mix ----------------------------------------------------------------------------------------

# Share of events by kind: chat dominates, as on any inference platform.
KIND_WEIGHTS = {"chat": 78, "embedding": 8, "image": 7, "tts": 4, "asr": 3}


def _kind(fields_charged: frozenset[str]) -> str | None:
    if "completion_tokens" in fields_charged:
        return "chat"
    if fields_charged == {"prompt_tokens"}:
        return "embedding"
    if fields_charged == {"images"}:
        return "image"
    if fields_charged == {"characters"}:
        return "tts"
    if fields_charged == {"seconds"}:
        return "asr"
    return None


def catalogue_models(catalog: Catalog) -> dict[str, list[tuple[str, frozenset[str]]]]:
    """The catalogue's models by kind, in a stable order, with the event fields each one charges."""
    by_model: dict[str, set[str]] = {}
    from usage_ledger.catalog import _QUANTITY  # the catalogue's own mapping of unit type to event field
    for info in catalog.skus.values():
        by_model.setdefault(info.model_id, set()).add(_QUANTITY[(info.unit_type, info.breakdown)])
    out: dict[str, list[tuple[str, frozenset[str]]]] = {kind: [] for kind in KIND_WEIGHTS}
    for model_id in sorted(by_model):
        charged = frozenset(by_model[model_id])
        kind = _kind(charged)
        if kind is not None:
            out[kind].append((model_id, charged))
    return out


# -- users and keys ---------------------------------------------------------------------------------------------

def _split(total: int, weights: list[float]) -> list[int]:
    """Integers proportional to weights summing exactly to total (cumulative rounding)."""
    cum = list(accumulate(weights))
    scale = total / cum[-1]
    marks = [0] + [round(c * scale) for c in cum]
    return [b - a for a, b in zip(marks, marks[1:])]


def _secret(seed: int, user: int, key: int) -> str:
    digest = hashlib.blake2b(f"{seed}:{user}:{key}".encode(), digest_size=32).digest()
    import base64
    return "ul_" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def make_users(sizes: Sizes, catalog: Catalog, seed: int = SEED) -> list[BenchUser]:
    rng = random.Random(f"{seed}:users")
    models = catalogue_models(catalog)
    # Popularity: a seeded shuffle of each kind's models, then Zipf-like weights (a few dominate, all appear).
    popular: dict[str, list[tuple[str, float]]] = {}
    for kind, entries in models.items():
        ids = [m for m, _ in entries]
        rng.shuffle(ids)
        popular[kind] = [(m, 1.0 / (rank + 1) ** 1.1) for rank, m in enumerate(ids)]
    light = sizes.users - 1
    light_weights = [rng.lognormvariate(0, 1.2) for _ in range(light)]
    light_rows = _split(max(0, sizes.total_rows - sizes.heavy_rows), light_weights) if light else []
    users = []
    for i in range(sizes.users):
        heavy = i == 0
        n_keys = 10 if heavy else rng.randint(1, 10)
        keys = []
        for k in range(n_keys):
            kind = "ADMIN" if k == 0 or rng.random() < 0.2 else "INFERENCE"
            key_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            keys.append(BenchKey(key_id, _secret(seed, i, k), kind, f"{'Production' if k == 0 else 'Key'} {k + 1}"))
        join_day = 0 if heavy or rng.random() < 0.7 else rng.randrange(sizes.days * 2 // 3)
        diem = heavy or rng.random() < 0.4
        user = BenchUser(i, f"bench-user-{i:04d}", "Heavy Labs" if heavy else f"Bench user {i}", keys,
                         sizes.heavy_rows if heavy else light_rows[i - 1], join_day, diem)
        n_models = 40 if heavy else rng.randint(2, 12)
        chosen: dict[str, float] = {}
        for _ in range(n_models * 4):
            if len(chosen) >= n_models:
                break
            kind = rng.choices(list(KIND_WEIGHTS), list(KIND_WEIGHTS.values()))[0]
            names, weights = zip(*popular[kind]) if popular[kind] else ((), ())
            if not names:
                continue
            model = rng.choices(names, weights)[0]
            chosen.setdefault(f"{kind}\0{model}", KIND_WEIGHTS[kind] * rng.uniform(0.2, 1.0))
        if not any(k.startswith("chat\0") for k in chosen) and popular["chat"]:
            chosen[f"chat\0{popular['chat'][0][0]}"] = KIND_WEIGHTS["chat"]
        user.models = [tuple(k.split("\0")) for k in chosen]  # type: ignore[misc]
        user.model_weights = list(chosen.values())
        users.append(user)
    return users


# -- records ----------------------------------------------------------------------------------------------------

def _lognormal(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    return max(low, min(high, int(rng.lognormvariate(math.log(median), sigma))))


def event_shape(user: BenchUser, charged: dict[str, frozenset[str]], catalog: Catalog) -> tuple[float, float]:
    """Rows and USD per event of a user's mix, estimated from a seeded sample: row targets come out right, and
    credits can be sized to the spend."""
    from usage_ledger.catalog import EventQuantities

    rng = random.Random(f"expect:{user.index}")
    n = 20_000 if user.index == 0 else 300
    rows, usd = 0, Decimal(0)
    for _ in range(n):
        kind, model = rng.choices(user.models, user.model_weights)[0]
        q = _quantities(rng, kind, charged[model])
        rows += len(_rows_of(kind, charged[model], q))
        quantities = EventQuantities(
            prompt_tokens=q.get("promptTokens"), cached_prompt_tokens=q.get("cachedPromptTokens"),
            cache_write_tokens=q.get("cacheWriteTokens"), completion_tokens=q.get("completionTokens"),
            images=q.get("images"), characters=q.get("characters"), seconds=q.get("seconds"))
        usd += sum(info.price_usd * units for info, units in catalog.expand(model, quantities))
    return rows / n, float(usd) / n


def _quantities(rng: random.Random, kind: str, charged: frozenset[str]) -> dict[str, Any]:
    if kind == "chat":
        prompt = _lognormal(rng, 1800, 1.1, 30, 150_000)
        completion = _lognormal(rng, 320, 0.9, 1, 8_000)
        q: dict[str, Any] = {"promptTokens": prompt, "completionTokens": completion,
                             "inferenceExecutionTime": int(180 + completion * rng.uniform(8, 30))}
        cached = 0
        if "cached_prompt_tokens" in charged and rng.random() < 0.5:
            cached = int(prompt * rng.uniform(0.3, 0.9))
            q["cachedPromptTokens"] = cached
        if "cache_write_tokens" in charged and rng.random() < 0.15:
            q["cacheWriteTokens"] = int((prompt - cached) * rng.uniform(0.2, 0.7))
        return q
    if kind == "embedding":
        return {"promptTokens": _lognormal(rng, 600, 1.0, 8, 8_000), "inferenceExecutionTime": rng.randint(40, 400)}
    if kind == "image":
        return {"images": rng.choices([1, 2, 4], [80, 15, 5])[0], "inferenceExecutionTime": rng.randint(2_500, 14_000)}
    if kind == "tts":
        return {"characters": _lognormal(rng, 900, 0.8, 20, 20_000), "inferenceExecutionTime": rng.randint(300, 4_000)}
    return {"seconds": Decimal(rng.randint(30, 36_000)) / 10, "inferenceExecutionTime": rng.randint(800, 30_000)}


def _rows_of(kind: str, charged: frozenset[str], q: dict[str, Any]) -> list[str]:
    """Which SKU kinds an event yields (cached and cache-write tokens without their own price fold into input)."""
    if kind != "chat":
        return ["one"]
    rows = {"input", "output"}
    if q.get("cachedPromptTokens"):
        rows.add("cached" if "cached_prompt_tokens" in charged else "input")
    if q.get("cacheWriteTokens"):
        rows.add("write" if "cache_write_tokens" in charged else "input")
    if q["promptTokens"] - q.get("cachedPromptTokens", 0) - q.get("cacheWriteTokens", 0) == 0:
        rows.discard("input")
    return sorted(rows)


def _day_weights(days: int, anchor: int) -> list[float]:
    first = anchor // MS_PER_DAY - days
    out = []
    for d in range(days):
        weekday = (first + d + 3) % 7  # 1970-01-01 was a Thursday: 0 = Monday
        out.append((0.5 if weekday >= 5 else 1.0) * (0.6 + 0.8 * d / max(1, days - 1)))
    return out


_HOUR_WEIGHTS = list(accumulate(0.15 + math.exp(-(((h - 16) / 4.5) ** 2)) for h in range(24)))


def _ts_in_day(rng: random.Random, day_start: int) -> int:
    hour = bisect(_HOUR_WEIGHTS, rng.random() * _HOUR_WEIGHTS[-1])
    return day_start + min(hour, 23) * MS_PER_HOUR + rng.randrange(MS_PER_HOUR)


class Generator:
    """The year's records in arrival order, day by day; also the ingest set for a fresh database."""

    def __init__(self, sizes: Sizes, catalog: Catalog, anchor: int, seed: int = SEED) -> None:
        self.sizes, self.catalog, self.anchor, self.seed = sizes, catalog, anchor, seed
        self.users = make_users(sizes, catalog, seed)
        models = catalogue_models(catalog)
        self.charged = {m: c for entries in models.values() for m, c in entries}
        self.first_day = anchor // MS_PER_DAY - sizes.days
        self.vcu_prices = {}
        for sku, info in catalog.skus.items():
            self.vcu_prices[sku] = info.price_usd
        day_weights = _day_weights(sizes.days, anchor)
        self.events_per_day: list[list[int]] = []
        for user in self.users:
            per_event, usd_per_event = event_shape(user, self.charged, catalog)
            credits = self._credit_rows(user)
            events = max(0, round((user.target_rows - credits) / per_event))
            weights = [w if d >= user.join_day else 0.0 for d, w in enumerate(day_weights)]
            self.events_per_day.append(_split(events, weights) if events else [0] * sizes.days)
            # Credits cover about 10% of the spend in DIEM (stakers), 10% in bundled credits, 60% in USD purchases;
            # the rest of the USD goes negative, which the ledger allows (API.md §2).
            daily = Decimal(events * usd_per_event / max(1, sizes.days - user.join_day))
            cent = Decimal("0.01")
            if user.stakes_diem:
                user.diem_daily = max(cent, (daily * Decimal("0.1")).quantize(cent))
            user.bundled_monthly = max(cent, (daily * 3).quantize(cent))
            user.usd_monthly = max(cent, (daily * 18).quantize(cent))

    @property
    def heavy(self) -> BenchUser:
        return self.users[0]

    def _credit_rows(self, user: BenchUser) -> int:
        active = self.sizes.days - user.join_day
        months = (active + 29) // 30
        return (active if user.stakes_diem else 0) + 2 * months

    # Credits: a DIEM allocation each day for stakers, bundled credits and a USD purchase each 30 days. They are
    # sized below the spend, so each day's usage runs through DIEM, then bundled credits, then USD.
    def _credits(self, user: BenchUser, day: int, day_start: int) -> list[dict[str, Any]]:
        out = []
        uid = user.user_id
        if user.stakes_diem:
            out.append({"userId": uid, "sku": "credit", "units": user.diem_daily, "pricePerUnitUsd": 1,
                        "amount": user.diem_daily, "currency": "DIEM", "notes": "DIEM allocation",
                        "idempotencyKey": f"bench:{uid}:diem:{day}", "timestamp": day_start + 1})
        if (day - user.join_day) % 30 == 0:
            bundled, usd = user.bundled_monthly, user.usd_monthly
            out.append({"userId": uid, "sku": "credit", "units": bundled, "pricePerUnitUsd": 1, "amount": bundled,
                        "currency": "BUNDLED_CREDITS", "notes": "Bundled credits",
                        "idempotencyKey": f"bench:{uid}:bundled:{day}", "timestamp": day_start + 2})
            out.append({"userId": uid, "sku": "credit", "units": usd, "pricePerUnitUsd": 1, "amount": usd,
                        "currency": "USD", "notes": "Credit purchase",
                        "idempotencyKey": f"bench:{uid}:usd:{day}", "timestamp": day_start + 3})
        return out

    def _event(self, rng: random.Random, user: BenchUser, ts: int, day: int, n: int) -> list[dict[str, Any]]:
        kind, model = rng.choices(user.models, user.model_weights)[0]
        charged = self.charged[model]
        q = _quantities(rng, kind, charged)
        request_id = f"{'chatcmpl' if kind == 'chat' else kind}-{rng.getrandbits(96):024x}"
        roll = rng.random()
        key = None if roll < NO_KEY_SHARE else user.keys[min(len(user.keys) - 1, int(rng.paretovariate(1.2)) - 1)].id
        if kind == "chat" and day < VCU_DAYS and roll > 1 - VCU_SHARE:
            return self._legacy_vcu(user, model, q, request_id, ts)
        record = {"userId": user.user_id, "model": model, "requestId": request_id, "timestamp": ts, "notes": NOTES,
                  **q}
        if key is not None:
            record["apiKeyId"] = key
        return [record]

    def _legacy_vcu(self, user: BenchUser, model: str, q: dict, request_id: str, ts: int) -> list[dict[str, Any]]:
        """Rows imported from a Venice export of the VCU era: priced rows that carry their amount and currency."""
        out = []
        for part, tokens in (("input", q["promptTokens"]), ("output", q["completionTokens"])):
            sku = f"{model}-llm-{part}-mtoken"
            price = self.vcu_prices.get(sku)
            if price is None:
                continue
            units = Decimal(tokens) / 1_000_000
            out.append({"userId": user.user_id, "sku": sku, "units": units, "pricePerUnitUsd": price,
                        "amount": -(units * price).quantize(Decimal("1e-9")), "currency": "VCU", "timestamp": ts,
                        "notes": NOTES, "requestId": request_id, "promptTokens": q["promptTokens"],
                        "completionTokens": q["completionTokens"]})
        return out

    def day_records(self, day: int) -> list[dict[str, Any]]:
        """Day `day`'s records (all users), sorted by timestamp; deterministic per (seed, day)."""
        day_start = (self.first_day + day) * MS_PER_DAY
        records: list[dict[str, Any]] = []
        for user, counts in zip(self.users, self.events_per_day):
            if day < user.join_day:
                continue
            rng = random.Random(f"{self.seed}:{user.index}:{day}")
            records += self._credits(user, day, day_start)
            ts = day_start
            for i in range(counts[day]):
                if i == 0 or rng.random() >= BURST_SHARE:
                    ts = _ts_in_day(rng, day_start)
                records += self._event(rng, user, ts, day, i)
        records.sort(key=lambda r: r["timestamp"])
        return records

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record in arrival order: day by day, ~1% of each day's records held back 1 to 30 days."""
        rng = random.Random(f"{self.seed}:backfill")
        held: dict[int, list[dict[str, Any]]] = {}
        for day in range(self.sizes.days):
            late = held.pop(day, [])
            for record in self.day_records(day):
                # Credits are never late: the spend order depends on them being there.
                if record["sku" if "sku" in record else "model"] != "credit" and rng.random() < BACKFILL_SHARE:
                    held.setdefault(day + rng.randint(1, 30), []).append(record)
                else:
                    yield record
            yield from late
        for day in sorted(held):
            yield from held[day]

    def ingest_records(self) -> list[dict[str, Any]]:
        """The ingest set: `ingest_records` events of the last days' mix (fresh request ids), for a fresh database
        that holds the same users and keys; every record is priced from the catalogue."""
        rng = random.Random(f"{self.seed}:ingest")
        out: list[dict[str, Any]] = []
        active = [u for u in self.users]
        weights = [max(1, u.target_rows) for u in active]
        span = 7 * MS_PER_DAY
        start = self.anchor - span
        stamps = sorted(start + rng.randrange(span) for _ in range(self.sizes.ingest_records))
        for i, ts in enumerate(stamps):
            user = rng.choices(active, weights)[0]
            event = self._event(rng, user, ts, self.sizes.days, i)
            for record in event:
                record["requestId"] = f"ingest-{i}-{record['requestId']}"
            out += event
        return out[:self.sizes.ingest_records]
