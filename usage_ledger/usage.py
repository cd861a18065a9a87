"""Reading usage back: page math, signed cursors, and rows rendered as Venice's JSON and CSV (API.md §3, §4)."""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import hmac
import io
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable, Iterator

import orjson

from .money import CURRENCY_NAMES, render
from .store.base import UsageRow
from .timeutil import iso_ms

CSV_HEADER = ("timestamp", "sku", "pricePerUnitUsd", "units", "amount", "currency", "notes",
              "inferenceDetails.requestId", "inferenceDetails.inferenceExecutionTime",
              "inferenceDetails.promptTokens", "inferenceDetails.completionTokens")
# Spreadsheets run a cell that starts with one of these as a formula.
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def total_pages(total: int, limit: int) -> int:
    return math.ceil(total / limit)


# -- rendering --------------------------------------------------------------------------------------------------

def _number(n: int) -> orjson.Fragment:
    return orjson.Fragment(render(n).encode())


def row_json(row: UsageRow) -> dict:
    details = None
    if row.request_id is not None:
        details = {"requestId": row.request_id, "inferenceExecutionTime": row.exec_ms,
                   "promptTokens": row.prompt_tokens, "completionTokens": row.completion_tokens}
    return {"timestamp": iso_ms(row.ts), "sku": row.sku, "pricePerUnitUsd": _number(row.price),
            "units": _number(row.units), "amount": _number(row.amount), "currency": CURRENCY_NAMES[row.currency],
            "notes": row.notes, "inferenceDetails": details}


def _default(value):
    if isinstance(value, Decimal):  # exact decimals stay exact: written as the plain number they are
        return orjson.Fragment(format(value.normalize(), "f").encode())
    raise TypeError(type(value).__name__)


def dumps(body) -> bytes:
    return orjson.dumps(body, default=_default)


def _text_cell(value: str | None) -> str:
    if value is None:
        return ""
    # Quotes the value itself begins with are looked past, so that the re-import tells "'=x" from a guarded "=x".
    return "'" + value if value.lstrip("'").startswith(_FORMULA_PREFIXES) else value


def _int_cell(value: int | None) -> str:
    return "" if value is None else str(value)


def row_csv_cells(row: UsageRow) -> list[str]:
    return [iso_ms(row.ts), _text_cell(row.sku), render(row.price), render(row.units), render(row.amount),
            CURRENCY_NAMES[row.currency], _text_cell(row.notes), _text_cell(row.request_id), _int_cell(row.exec_ms),
            _int_cell(row.prompt_tokens), _int_cell(row.completion_tokens)]


def csv_lines(rows: Iterable[UsageRow], *, header: bool = True) -> Iterator[str]:
    """RFC 4180: CRLF line ends, quotes doubled, quoted only where needed; yields text chunk by chunk."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if header:
        writer.writerow(CSV_HEADER)
    for i, row in enumerate(rows, 1):
        writer.writerow(row_csv_cells(row))
        if i % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def csv_text(rows: Iterable[UsageRow]) -> str:
    return "".join(csv_lines(rows))


def strip_formula_guard(value: str) -> str:
    """The inverse of the export's guard, for re-import: "'=x" → "=x", "''=x" → "'=x"."""
    if value.startswith("'") and value.lstrip("'").startswith(_FORMULA_PREFIXES):
        return value[1:]
    return value


# -- Accept -----------------------------------------------------------------------------------------------------

_CSV_TYPES = {"text/csv", "text/*"}


def prefers_csv(accept: str | None) -> bool:
    """CSV only where text/csv is preferred: q-values honoured, the first listed wins a tie (API.md §3)."""
    if not accept:
        return False
    best_q, best_is_csv = -1.0, False
    for part in accept.split(","):
        media, *params = [p.strip() for p in part.split(";")]
        if not media:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0 or math.isnan(q):
                    q = 0.0
        if q > best_q:
            best_q, best_is_csv = q, media.lower() in _CSV_TYPES
    return best_is_csv and best_q > 0


# -- cursors ----------------------------------------------------------------------------------------------------

class CursorError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Cursor:
    """A usage-history walk's position, its filters, its owner and page size; signed so nobody can alter them."""
    uid: int
    currency: int | None
    start: int | None
    end: int | None
    page_size: int
    after_ts: int
    after_id: int
    max_id: int
    issued_at: int


_MAC_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_cursor(cursor: Cursor, secret: bytes) -> str:
    payload = orjson.dumps([cursor.uid, cursor.currency, cursor.start, cursor.end, cursor.page_size,
                            cursor.after_ts, cursor.after_id, cursor.max_id, cursor.issued_at])
    mac = hmac.new(secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]
    return _b64(mac + payload)


def decode_cursor(text: str, secret: bytes, *, uid: int, now: int, max_age_ms: int) -> Cursor:
    try:
        raw = _unb64(text)
    except (binascii.Error, ValueError):
        raise CursorError("is not a valid cursor") from None
    if _b64(raw) != text:  # one spelling per cursor: no spare bits flipped, no characters the decoder skips
        raise CursorError("is not a valid cursor")
    mac, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
    if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, hmac.new(secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]):
        raise CursorError("is not a valid cursor")
    try:
        cursor = Cursor(*orjson.loads(payload))
    except (orjson.JSONDecodeError, TypeError):
        raise CursorError("is not a valid cursor") from None
    if cursor.uid != uid:
        raise CursorError("was issued to another user")
    if now - cursor.issued_at > max_age_ms:
        raise CursorError("has expired; restart the walk from the first page")
    return cursor
