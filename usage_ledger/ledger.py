"""Ingest rules (API.md §2): validate, expand, price, idempotency, spend order. Plain Python; the store only persists.

A batch runs in one write transaction: every record is checked against the idempotency keys already claimed (and those
claimed earlier in the same batch), charged in the first currency of DIEM → BUNDLED_CREDITS → USD that covers it, and
its rows, key, balance move and rollups are written together or not at all.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Iterable, NamedTuple, Protocol, TypeVar

import orjson

from .catalog import Catalog, EventQuantities, PricingError
from .money import CURRENCY_CODES, SPEND_ORDER, MoneyError, multiply, to_nano
from .timeutil import TimeParseError, now_ms, parse_instant

MAX_NOTES = 1024
MAX_ID_LENGTH = 256
FUTURE_TOLERANCE_MS = 5 * 60_000
CREDIT_SKU = "credit"
T = TypeVar("T")

_COMMON_FIELDS = {"userId", "apiKeyId", "requestId", "timestamp", "notes", "idempotencyKey", "promptTokens",
                  "completionTokens", "inferenceExecutionTime"}
EVENT_FIELDS = _COMMON_FIELDS | {"model", "cachedPromptTokens", "cacheWriteTokens", "images", "characters", "seconds"}
PRICED_FIELDS = _COMMON_FIELDS | {"sku", "units", "pricePerUnitUsd", "amount", "currency"}


class RecordError(ValueError):
    """Why one record was refused; the message goes back to the platform as is, the field (where one field is at
    fault) lets an API that takes the record's fields as its own name it in a 400."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NewRow(NamedTuple):
    """A row to append, its fields in the order of usage_rows' INSERT (the store sends it as is)."""
    uid: int
    ts: int
    sku: str
    price: int  # nano USD per unit
    units: int  # nano-units
    amount: int  # nano, negative for a debit
    currency: int
    notes: str
    request_id: str | None
    exec_ms: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    kid: int | None


@dataclass(slots=True)
class _Line:
    """One row of a record before its currency is known."""
    sku: str
    price_usd: int
    price_diem: int
    units: int
    fixed_amount: int | None  # imports and credits carry their amount


@dataclass(slots=True)
class Prepared:
    index: int
    user_id: str
    api_key_id: str | None
    key_hash: bytes
    content_hash: bytes
    ts: int
    notes: str
    request_id: str | None
    exec_ms: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    currency: str | None
    lines: list[_Line] = field(default_factory=list)


@dataclass(slots=True)
class Outcome:
    index: int
    status: str  # recorded | duplicate | error
    error: str | None = None
    field: str | None = None  # the record's field at fault, where one is (not sent: results name no fields)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "status": self.status}
        if self.error is not None:
            out["error"] = self.error
        return out


class WriteTx(Protocol):
    """What the ledger needs from a store inside one write transaction."""

    def user_uids(self, user_ids: Iterable[str]) -> dict[str, int]: ...
    def lock_users(self, uids: Iterable[int]) -> None: ...
    def key_owners(self, key_ids: Iterable[str]) -> dict[str, tuple[int, int]]: ...
    def claimed_keys(self, keys: Iterable[tuple[int, bytes]]) -> dict[tuple[int, bytes], bytes]: ...
    def balances(self, uids: Iterable[int]) -> dict[tuple[int, int], int]: ...
    def append(self, rows: list[NewRow], claims: list[tuple[int, bytes, bytes]]) -> None: ...


class Writer(Protocol):
    """What record() needs from a store: a write transaction to run the batch in."""

    def write_shared(self, work: Callable[[WriteTx], T]) -> T: ...


def _hash16(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _canonical(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    raise TypeError(type(value).__name__)


def content_hash(record: dict[str, Any]) -> bytes:
    """The same record, retried, hashes the same: keys sorted, decimals normalised. Stored hashes depend on this
    exact encoding, so it must not change without a migration."""
    try:
        return _hash16(orjson.dumps(record, option=orjson.OPT_SORT_KEYS, default=_canonical))
    except orjson.JSONEncodeError as exc:  # integers past 64 bits, nesting past 255 levels
        raise RecordError(f"record cannot be stored: {exc}") from None


def _string(record: dict, name: str, *, required: bool = False, max_len: int = MAX_ID_LENGTH) -> str | None:
    value = record.get(name)
    if value is None:
        if required:
            raise RecordError(f"{name} is required", name)
        return None
    if not isinstance(value, str) or (required and not value):
        raise RecordError(f"{name} must be a non-empty string" if required else f"{name} must be a string", name)
    if len(value) > max_len:
        raise RecordError(f"{name} is longer than {max_len} characters", name)
    if "\x00" in value:  # PostgreSQL text cannot hold it: refused on both engines alike
        raise RecordError(f"{name} must not contain NUL characters", name)
    return value


def _count(record: dict, name: str) -> int | None:
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RecordError(f"{name} must be a non-negative integer", name)
    if value > 2**53:
        raise RecordError(f"{name} is too large", name)
    return value


def _number(record: dict, name: str, *, allow_negative: bool = False) -> Decimal | None:
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise RecordError(f"{name} must be a number", name)
    d = Decimal(value)
    if not d.is_finite() or (d < 0 and not allow_negative):
        raise RecordError(f"{name} must be a non-negative number", name)
    return d


def _nano(value: Decimal, name: str) -> int:
    try:
        return to_nano(value, name)
    except MoneyError as exc:
        raise RecordError(str(exc), name) from None


def _timestamp(record: dict, now: int) -> int:
    value = record.get("timestamp")
    if value is None:
        return now
    if isinstance(value, str):
        try:
            ts = parse_instant(value)
        except TimeParseError as exc:
            raise RecordError(f"timestamp {exc}", "timestamp") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        ts = value  # epoch milliseconds
    else:
        raise RecordError("timestamp must be an ISO 8601 string or epoch milliseconds", "timestamp")
    if ts > now + FUTURE_TOLERANCE_MS:
        raise RecordError("timestamp is more than 5 minutes in the future", "timestamp")
    if ts < 0:
        raise RecordError("timestamp is before 1970", "timestamp")
    return ts


def prepare(record: Any, index: int, catalog: Catalog, now: int) -> Prepared:
    """Validate one record and work out its rows; raises RecordError with the reason."""
    if not isinstance(record, dict):
        raise RecordError("record must be a JSON object")
    is_event, is_priced = "model" in record, "sku" in record
    if is_event == is_priced:
        raise RecordError("record must have exactly one of model (an inference event) or sku (a priced row)")
    allowed = EVENT_FIELDS if is_event else PRICED_FIELDS
    unknown = sorted(set(record) - allowed)
    if unknown:
        raise RecordError(f"unknown field(s): {', '.join(unknown)}")

    user_id = _string(record, "userId", required=True)
    api_key_id = _string(record, "apiKeyId")
    request_id = _string(record, "requestId")
    notes = _string(record, "notes", max_len=MAX_NOTES) or ""
    idempotency_key = _string(record, "idempotencyKey")
    prepared = Prepared(
        index=index, user_id=user_id, api_key_id=api_key_id, key_hash=b"", content_hash=content_hash(record),
        ts=_timestamp(record, now), notes=notes, request_id=request_id,
        exec_ms=_count(record, "inferenceExecutionTime"), prompt_tokens=_count(record, "promptTokens"),
        completion_tokens=_count(record, "completionTokens"), currency=None,
    )
    if is_event:
        key = idempotency_key or request_id
        if key is None:
            raise RecordError("an inference event needs an idempotencyKey or a requestId")
        _expand_event(record, prepared, catalog)
    else:
        sku = _string(record, "sku", required=True)
        key = idempotency_key or (f"{request_id}:{sku}" if request_id else None)
        if key is None:
            raise RecordError("a priced row needs an idempotencyKey or a requestId")
        _price_row(record, sku, prepared, catalog)
    prepared.key_hash = _hash16(key.encode())
    return prepared


def _expand_event(record: dict, prepared: Prepared, catalog: Catalog) -> None:
    seconds = _number(record, "seconds")
    quantities = EventQuantities(
        prompt_tokens=prepared.prompt_tokens, cached_prompt_tokens=_count(record, "cachedPromptTokens"),
        cache_write_tokens=_count(record, "cacheWriteTokens"), completion_tokens=prepared.completion_tokens,
        images=_count(record, "images"), characters=_count(record, "characters"), seconds=seconds,
    )
    model = _string(record, "model", required=True)
    try:
        expanded = catalog.expand(model, quantities)
    except PricingError as exc:
        raise RecordError(str(exc)) from None
    for info, units in expanded:
        prepared.lines.append(_Line(info.sku, info.usd_nano, info.diem_nano, _nano(units, "units"), None))


def _price_row(record: dict, sku: str, prepared: Prepared, catalog: Catalog) -> None:
    units = _number(record, "units")
    if units is None:
        raise RecordError("units is required for a priced row")
    price = _number(record, "pricePerUnitUsd")
    amount = _number(record, "amount", allow_negative=True)
    currency = record.get("currency")
    if currency is not None and currency not in CURRENCY_CODES:
        raise RecordError(f"currency must be one of {', '.join(CURRENCY_CODES)}", "currency")
    if price is None:
        info = catalog.sku(sku)
        if info is None:
            raise RecordError(f"sku '{sku}' is not in the catalogue; give pricePerUnitUsd to charge it anyway")
        price_usd, price_diem = info.usd_nano, info.diem_nano
    else:
        price_usd = price_diem = _nano(price, "pricePerUnitUsd")
    if amount is not None and amount > 0 and currency is None:
        raise RecordError("a positive amount (a credit or refund) needs a currency", "currency")
    if currency == "VCU" and amount is None:
        raise RecordError("VCU is legacy: it is never charged, only imported with an amount", "currency")
    prepared.currency = currency
    prepared.lines.append(_Line(sku, price_usd, price_diem, _nano(units, "units"),
                                None if amount is None else _nano(amount, "amount")))


def _amounts(prepared: Prepared, diem_prices: bool) -> list[int]:
    return [line.fixed_amount if line.fixed_amount is not None
            else -multiply(line.units, line.price_diem if diem_prices else line.price_usd) for line in prepared.lines]


def charge(prepared: Prepared, balance_of) -> tuple[str, list[int]]:
    """API.md §2: the first currency whose balance covers the record's total, else USD (which may go negative);
    with the amount of each of the record's rows in that currency."""
    if prepared.currency is not None:
        return prepared.currency, _amounts(prepared, prepared.currency == "DIEM")
    priced: dict[bool, list[int]] = {}  # DIEM has its own prices; every other currency pays the USD ones
    for currency in SPEND_ORDER:
        diem = currency == "DIEM"
        amounts = priced.get(diem)
        if amounts is None:
            amounts = priced[diem] = _amounts(prepared, diem)
        if balance_of(currency) >= -sum(amounts):
            return currency, amounts
    return "USD", priced.get(False) or _amounts(prepared, False)


@dataclass(slots=True)
class PreparedBatch:
    """A batch validated and priced, waiting for its write transaction."""
    outcomes: list[Outcome | None]  # set for the records refused already
    ready: list[Prepared]


def prepare_batch(records: list[Any], catalog: Catalog, now: int | None = None) -> PreparedBatch:
    """Validation, pricing and hashing, which need no database: done before the write transaction, so that one
    request's parsing overlaps another's commit."""
    now = now_ms() if now is None else now
    outcomes: list[Outcome | None] = [None] * len(records)
    ready: list[Prepared] = []
    for i, record in enumerate(records):
        if isinstance(record, RecordError):  # a line that could not even be parsed
            outcomes[i] = Outcome(i, "error", str(record))
            continue
        try:
            ready.append(prepare(record, i, catalog, now))
        except RecordError as exc:
            outcomes[i] = Outcome(i, "error", str(exc), exc.field)
    return PreparedBatch(outcomes, ready)


def record(store: Writer, records: list[Any], catalog: Catalog, now: int | None = None) -> list[Outcome]:
    """Record a batch: validated and priced first, then written in one write transaction (where the store has a
    single writer, shared with the batches queued beside it); one bad record never fails its neighbours."""
    batch = prepare_batch(records, catalog, now)
    return store.write_shared(lambda tx: write_batch(tx, batch))


def write_batch(tx: WriteTx, batch: PreparedBatch) -> list[Outcome]:
    """The database half of record(): users, keys, idempotency, spend order, rows."""
    outcomes, ready = list(batch.outcomes), batch.ready
    uids = tx.user_uids({p.user_id for p in ready})
    keys = tx.key_owners({p.api_key_id for p in ready if p.api_key_id is not None})
    resolved: list[tuple[Prepared, int, int | None]] = []
    for p in ready:
        uid = uids.get(p.user_id)
        if uid is None:
            outcomes[p.index] = Outcome(p.index, "error", f"unknown userId '{p.user_id}'", "userId")
            continue
        kid = None
        if p.api_key_id is not None:
            owner = keys.get(p.api_key_id)
            if owner is None or owner[1] != uid:
                outcomes[p.index] = Outcome(p.index, "error", f"apiKeyId '{p.api_key_id}' is not a key of this user",
                                            "apiKeyId")
                continue
            kid = owner[0]
        resolved.append((p, uid, kid))

    # Writers of one user queue behind each other (a no-op where the engine has a single writer), so the keys and
    # balances read below stay true until this transaction commits.
    tx.lock_users({uid for _, uid, _ in resolved})
    claimed = tx.claimed_keys({(uid, p.key_hash) for p, uid, _ in resolved})
    balances = tx.balances({uid for _, uid, _ in resolved})
    rows: list[NewRow] = []
    claims: list[tuple[int, bytes, bytes]] = []
    for p, uid, kid in resolved:
        previous = claimed.get((uid, p.key_hash))
        if previous is not None:
            outcomes[p.index] = (Outcome(p.index, "duplicate") if previous == p.content_hash else
                                 Outcome(p.index, "error", "idempotency key reused with different content",
                                         "idempotencyKey"))
            continue
        currency, amounts = charge(p, lambda c: balances.get((uid, CURRENCY_CODES[c]), 0))
        code = CURRENCY_CODES[currency]
        for line, amount in zip(p.lines, amounts):
            rows.append(NewRow(uid, p.ts, line.sku, line.price_usd, line.units, amount, code, p.notes, p.request_id,
                               p.exec_ms, p.prompt_tokens, p.completion_tokens, kid))
            balances[(uid, code)] = balances.get((uid, code), 0) + amount
        claimed[(uid, p.key_hash)] = p.content_hash
        claims.append((uid, p.key_hash, p.content_hash))
        outcomes[p.index] = Outcome(p.index, "recorded")
    if rows:
        tx.append(rows, claims)
    return [o for o in outcomes if o is not None]


def credit_record(user_id: str, currency: Any, amount: Any, notes: Any, idempotency_key: Any) -> dict[str, Any]:
    """A credit (API.md §2) is a priced row of sku 'credit' whose positive amount raises the balance."""
    return {"userId": user_id, "sku": CREDIT_SKU, "units": amount, "pricePerUnitUsd": Decimal(1), "amount": amount,
            "currency": currency, "notes": notes if notes is not None else "", "idempotencyKey": idempotency_key}
