"""Deterministic demo data: a user, three API keys and a month of realistic usage.

Everything goes through the ledger's own batch path (ledger.record), so balances, the spend order and the rollups are
exactly what real ingest would produce. The same seed and `now` give the same rows.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .api.keys import CreateKey, create_key_for
from .ledger import credit_record, record
from .services import Services
from .store.base import UsageFilter
from .timeutil import MS_PER_DAY, MS_PER_HOUR, from_ms, now_ms

USER_ID = "demo"
USER_NAME = "Demo Labs"
KEYS = (("ADMIN", "Production"), ("ADMIN", "Staging"), ("INFERENCE", "Batch jobs"))
DAYS = 30
EVENTS = 2600
SEED = 20260822
BATCH = 1000
NOTES = "API Inference"

# (kind, model, weight, share of requests that hit the prompt cache, share that write to it)
MODELS = (
    ("chat", "llama-3.3-70b", 28, 0.0, 0.0),
    ("chat", "deepseek-v3.2", 20, 0.5, 0.0),
    ("chat", "kimi-k2-6", 12, 0.4, 0.0),
    ("chat", "claude-sonnet-5", 8, 0.6, 0.15),
    ("embedding", "text-embedding-3-small", 14, 0.0, 0.0),
    ("image", "flux-2-pro", 9, 0.0, 0.0),
    ("tts", "tts-kokoro", 5, 0.0, 0.0),
    ("asr", "openai/whisper-large-v3", 4, 0.0, 0.0),
)
REQUEST_PREFIX = {"chat": "chatcmpl-", "embedding": "embd-", "image": "img-", "tts": "tts-", "asr": "asr-"}
# Sized to the month's spend (about 34 USD): usage moves from DIEM to bundled credits to USD as each runs out.
OPENING_CREDITS = (("DIEM", "6", "DIEM allocation"), ("BUNDLED_CREDITS", "12", "Bundled credits"),
                   ("USD", "20", "Credit purchase"))
TOP_UP = ("USD", "30", "Credit purchase")
LEGACY_VCU_REQUESTS = 4
LEGACY_MODEL = "llama-3.3-70b"


@dataclass(frozen=True)
class DemoData:
    user_id: str
    admin_key: str  # the secret of the "Production" ADMIN key, shown once
    rows: int


def _lognormal(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    return max(low, min(high, int(rng.lognormvariate(math.log(median), sigma))))


def _request_id(rng: random.Random, kind: str) -> str:
    return f"{REQUEST_PREFIX[kind]}{rng.getrandbits(128):032x}"


def _first_hour(now: int) -> int:
    """The oldest whole hour of the last DAYS days."""
    return now // MS_PER_HOUR - DAYS * 24 + 1


def _timestamps(rng: random.Random, now: int, n: int) -> list[int]:
    """n instants over the last DAYS days: busier on weekdays and in the (UTC) afternoon, growing over the month."""
    hours = range(_first_hour(now), now // MS_PER_HOUR + 1)
    weights = []
    for i, hour in enumerate(hours):
        dt = from_ms(hour * MS_PER_HOUR)
        weekday = 0.45 if dt.weekday() >= 5 else 1.0
        daytime = 0.15 + math.exp(-(((dt.hour - 16) / 4.5) ** 2))
        weights.append(weekday * daytime * (0.7 + 0.6 * i / len(hours)))
    out = []
    for hour in rng.choices(hours, weights, k=n):
        start = hour * MS_PER_HOUR
        out.append(start + rng.randrange(max(1, min(MS_PER_HOUR, now - start))))
    return sorted(out)


def _event(rng: random.Random, ts: int, key_ids: list[str]) -> dict[str, Any]:
    kind, model, _, cached_share, write_share = rng.choices(MODELS, [m[2] for m in MODELS])[0]
    record: dict[str, Any] = {"userId": USER_ID, "model": model, "requestId": _request_id(rng, kind),
                              "timestamp": ts, "notes": NOTES}
    # Batch jobs run the embeddings; a few requests come from outside any key (the web app).
    production, staging, batch = key_ids
    weights = [10, 80, 5, 5] if kind == "embedding" else [62, 12, 14, 12]
    key = rng.choices([production, batch, staging, None], weights)[0]
    if key is not None:
        record["apiKeyId"] = key
    if kind == "chat":
        prompt = _lognormal(rng, 1800, 1.1, 30, 150_000)
        completion = _lognormal(rng, 320, 0.9, 1, 8_000)
        record.update(promptTokens=prompt, completionTokens=completion,
                      inferenceExecutionTime=int(180 + completion * rng.uniform(8, 30)))
        cached = 0
        if rng.random() < cached_share:
            cached = int(prompt * rng.uniform(0.3, 0.9))
            record["cachedPromptTokens"] = cached
        if rng.random() < write_share:
            record["cacheWriteTokens"] = int((prompt - cached) * rng.uniform(0.2, 0.7))
    elif kind == "embedding":
        record.update(promptTokens=_lognormal(rng, 600, 1.0, 8, 8_000),
                      inferenceExecutionTime=rng.randint(40, 400))
    elif kind == "image":
        record.update(images=rng.choices([1, 2, 4], [80, 15, 5])[0], inferenceExecutionTime=rng.randint(2_500, 14_000))
    elif kind == "tts":
        record.update(characters=_lognormal(rng, 900, 0.8, 20, 20_000), inferenceExecutionTime=rng.randint(300, 4_000))
    else:
        record.update(seconds=Decimal(rng.randint(30, 36_000)) / 10, inferenceExecutionTime=rng.randint(800, 30_000))
    return record


def _legacy_vcu(rng: random.Random, services: Services, ts: int) -> list[dict[str, Any]]:
    """Rows imported from a Venice export of the VCU era: priced rows carrying their own amount and currency."""
    request_id = _request_id(rng, "chat")
    prompt, completion = _lognormal(rng, 1500, 0.8, 30, 30_000), _lognormal(rng, 300, 0.8, 1, 4_000)
    rows = []
    for breakdown, tokens in (("input", prompt), ("output", completion)):
        sku = f"{LEGACY_MODEL}-llm-{breakdown}-mtoken"
        units = Decimal(tokens) / 1_000_000
        price = services.catalog.sku(sku).price_usd
        rows.append({"userId": USER_ID, "sku": sku, "units": units, "pricePerUnitUsd": price, "amount": -units * price,
                     "currency": "VCU", "timestamp": ts, "notes": NOTES, "requestId": request_id,
                     "promptTokens": prompt, "completionTokens": completion})
    return rows


def _credit(currency: str, amount: str, notes: str, ts: int, key: str) -> dict[str, Any]:
    return {**credit_record(USER_ID, currency, Decimal(amount), notes, f"demo:{key}"), "timestamp": ts}


def records(services: Services, key_ids: list[str], now: int, seed: int = SEED) -> list[dict[str, Any]]:
    """The month's records in time order, so that each is charged against the balances of its moment."""
    rng = random.Random(seed)
    start = _first_hour(now) * MS_PER_HOUR
    out = [_credit(currency, amount, notes, start + i, f"opening:{currency}")
           for i, (currency, amount, notes) in enumerate(OPENING_CREDITS)]
    for i in range(LEGACY_VCU_REQUESTS):
        out += _legacy_vcu(rng, services, start + (i + 1) * 7 * 60_000)
    out.append(_credit(*TOP_UP, start + DAYS // 2 * MS_PER_DAY + 9 * MS_PER_HOUR, "top-up"))
    out += [_event(rng, ts, key_ids) for ts in _timestamps(rng, now, EVENTS)]
    return sorted(out, key=lambda record: record["timestamp"])


def build(services: Services, now: int | None = None, seed: int = SEED) -> DemoData:
    """Fill a fresh (migrated, empty) database with the demo user, keys and usage."""
    now = now_ms() if now is None else now
    store, catalog = services.store, services.catalog
    user = store.create_user(USER_ID, USER_NAME, now)
    created = [create_key_for(services, user.uid, CreateKey(apiKeyType=kind, description=description))["data"]
               for kind, description in KEYS]
    all_records = records(services, [key["id"] for key in created], now, seed)
    for i in range(0, len(all_records), BATCH):
        batch = all_records[i:i + BATCH]
        outcomes = record(store, batch, catalog, now)
        refused = [o for o in outcomes if o.status != "recorded"]
        if refused:  # the demo's own data must be valid: fail loudly rather than serve a partial demo
            raise RuntimeError(f"demo record refused: {refused[0].error or refused[0].status}: "
                               f"{batch[refused[0].index]}")
    return DemoData(USER_ID, created[0]["apiKey"], store.count(UsageFilter(user.uid)))
