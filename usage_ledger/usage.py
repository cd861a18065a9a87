"""Reading usage back: page math, signed cursors, and rows rendered as Venice's JSON and CSV (API.md §3, §4)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
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


_GUARD_FIRST = frozenset("".join(_FORMULA_PREFIXES) + "'")


def _text_cell(value: str | None) -> str:
    """A text cell: formula-guarded, then quoted as RFC 4180 (and Python's csv module) would, only where needed."""
    if value is None:
        return ""
    # Quotes the value itself begins with are looked past, so that the re-import tells "'=x" from a guarded "=x".
    if value[:1] in _GUARD_FIRST and value.lstrip("'").startswith(_FORMULA_PREFIXES):
        value = "'" + value
    if '"' in value or "," in value or "\n" in value or "\r" in value:
        return '"' + value.replace('"', '""') + '"'
    return value


def csv_line(row: UsageRow) -> str:
    """One row as a CSV line with its CRLF. Written out by hand rather than through csv.writer: this runs for every
    exported row, and it is twice as fast; tests/test_csv_injection.py checks it against csv.writer byte for byte.
    Timestamps, numbers and currency names never need quoting."""
    exec_ms, prompt, completion = row[9], row[10], row[11]
    return (f"{iso_ms(row[1])},{_text_cell(row[2])},{render(row[3])},{render(row[4])},{render(row[5])},"
            f"{CURRENCY_NAMES[row[6]]},{_text_cell(row[7])},{_text_cell(row[8])},"
            f"{'' if exec_ms is None else exec_ms},{'' if prompt is None else prompt},"
            f"{'' if completion is None else completion}\r\n")


CSV_HEADER_LINE = ",".join(CSV_HEADER) + "\r\n"


def csv_lines(rows: Iterable[UsageRow], *, header: bool = True) -> Iterator[str]:
    """RFC 4180: CRLF line ends, quotes doubled, quoted only where needed; yields text 500 rows at a time."""
    if header:
        yield CSV_HEADER_LINE
    batch: list[str] = []
    for line in map(csv_line, rows):
        batch.append(line)
        if len(batch) == 500:
            yield "".join(batch)
            batch.clear()
    if batch:
        yield "".join(batch)


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
