"""Files in and out of the ledger: JSONL records and Venice's usage CSV in, the same CSV (or JSONL rows) out.

No terminal code here: the CLI adds progress bars and tables around these functions.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from .catalog import Catalog
from .ledger import RecordError, record
from .store.base import UsageFilter, UsageRow
from .store.sql import SqlStore
from .usage import CSV_HEADER, CSV_HEADER_LINE, csv_lines, dumps, row_json, strip_formula_guard

EXPORT_CHUNK = 5000
MAX_REPORTED_ERRORS = 10
_CSV_START = b"timestamp,"
_BOM = b"\xef\xbb\xbf"

Progress = Callable[[int], None]


class TransferError(Exception):
    """The file as a whole cannot be read or parsed (as opposed to one bad record in it)."""


@dataclass
class IngestSummary:
    recorded: int = 0
    duplicates: int = 0
    errors: int = 0
    first_errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, why)


class _Lines:
    """A binary file's lines, decoded, counting lines and bytes as they are consumed."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.number = 0
        self.bytes_read = 0

    def __iter__(self) -> Iterator[str]:
        for raw in self._f:
            self.number += 1
            self.bytes_read += len(raw)
            if self.number == 1:
                raw = raw.removeprefix(_BOM)
            try:
                yield raw.decode()
            except UnicodeDecodeError:
                raise TransferError(f"line {self.number} is not UTF-8 text") from None


def _jsonl_records(lines: _Lines, user_id: str | None) -> Iterator[tuple[int, Any]]:
    for text in lines:
        if not text.strip():
            continue
        try:
            # Decimal, not float: a price or amount must arrive exactly as written.
            record = json.loads(text, parse_float=Decimal)
        except (ValueError, RecursionError):
            record = RecordError("not valid JSON")
        if user_id is not None and isinstance(record, dict):
            record.setdefault("userId", user_id)
        yield lines.number, record


def _decimal(text: str, name: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise RecordError(f"{name} is not a number: {text!r}") from None


def _integer(text: str, name: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise RecordError(f"{name} is not a whole number: {text!r}")
    return int(text)


def csv_record(cells: list[str], user_id: str, idempotency_key: str) -> dict[str, Any]:
    """One exported CSV row as the priced row that reproduces it (API.md §3: export re-imports to the same rows)."""
    if len(cells) != len(CSV_HEADER):
        raise RecordError(f"expected {len(CSV_HEADER)} cells, found {len(cells)}")
    ts, sku, price, units, amount, currency, notes, request_id, exec_ms, prompt, completion = cells
    record: dict[str, Any] = {"userId": user_id, "timestamp": ts, "sku": strip_formula_guard(sku),
                              "units": _decimal(units, "units"), "notes": strip_formula_guard(notes),
                              "idempotencyKey": idempotency_key}
    # Left empty in a hand-made file, these fall back to the ledger's own rules (catalogue price, spend order).
    if price:
        record["pricePerUnitUsd"] = _decimal(price, "pricePerUnitUsd")
    if amount:
        record["amount"] = _decimal(amount, "amount")
    if currency:
        record["currency"] = currency
    if request_id:
        record["requestId"] = strip_formula_guard(request_id)
    for name, text in (("inferenceExecutionTime", exec_ms), ("promptTokens", prompt), ("completionTokens", completion)):
        if text:
            record[name] = _integer(text, name)
    return record


def _csv_records(lines: _Lines, user_id: str) -> Iterator[tuple[int, Any]]:
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise TransferError(f"line 1: {exc}") from None
    if header is None or tuple(header) != CSV_HEADER:
        raise TransferError(f"not a billing usage CSV: the first line must be {','.join(CSV_HEADER)}")
    seen: Counter[str] = Counter()
    while True:
        first_line = reader.line_num + 1  # a quoted cell may span lines: report where the row starts
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield first_line, RecordError(f"not valid CSV: {exc}")
            continue
        if not cells:
            continue
        # The same row twice in one file is two rows, so the key counts earlier identical rows.
        digest = hashlib.sha256(json.dumps(cells, ensure_ascii=False).encode()).hexdigest()
        key = f"csv:{digest}:{seen[digest]}"
        seen[digest] += 1
        try:
            yield first_line, csv_record(cells, user_id, key)
        except RecordError as exc:
            yield first_line, exc


def _is_csv(path: Path, f: BinaryIO) -> bool:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return False
    return suffix == ".csv" or f.peek(len(_BOM) + len(_CSV_START)).removeprefix(_BOM).startswith(_CSV_START)


def ingest_file(store: SqlStore, catalog: Catalog, path: str | Path, *, user_id: str | None = None,
                batch_size: int = 1000, progress: Progress | None = None) -> IngestSummary:
    """Record a JSONL or CSV file in batches of one write transaction each; `progress` gets the bytes read so far.

    Bad records are counted and reported by line; a file that cannot be read or parsed raises TransferError (batches
    before it stay recorded, and a re-run reports them as duplicates).
    """
    path = Path(path)
    summary = IngestSummary()
    try:
        with path.open("rb") as f:
            lines = _Lines(f)
            if _is_csv(path, f):
                if user_id is None:
                    raise TransferError("CSV rows name no user: give --user")
                records = _csv_records(lines, user_id)
            else:
                records = _jsonl_records(lines, user_id)
            while batch := list(islice(records, batch_size)):
                outcomes = record(store, [item for _, item in batch], catalog)
                for outcome in outcomes:
                    if outcome.status == "recorded":
                        summary.recorded += 1
                    elif outcome.status == "duplicate":
                        summary.duplicates += 1
                    else:
                        summary.errors += 1
                        if len(summary.first_errors) < MAX_REPORTED_ERRORS:
                            summary.first_errors.append((batch[outcome.index][0], outcome.error or ""))
                if progress:
                    progress(lines.bytes_read)
    except OSError as exc:
        raise TransferError(f"cannot read {path}: {exc.strerror or exc}") from None
    return summary


def usage_chunks(store: SqlStore, f: UsageFilter, chunk: int = EXPORT_CHUNK) -> Iterator[list[UsageRow]]:
    """The filtered rows ascending by (timestamp, id), a keyset chunk at a time: memory stays flat (two chunks).
    The next chunk is fetched on another thread while the caller renders this one: the driver releases the GIL
    while the database steps, so on two cores fetching and rendering overlap."""
    max_id = store.max_row_id()  # rows recorded during the export belong to the next one
    with ThreadPoolExecutor(1, thread_name_prefix="export-fetch") as fetcher:
        pending = fetcher.submit(store.usage_after, f, None, chunk, max_id)
        while pending is not None:
            rows = pending.result()
            pending = (fetcher.submit(store.usage_after, f, (rows[-1].ts, rows[-1].id), chunk, max_id)
                       if len(rows) == chunk else None)
            if rows:
                yield rows


def export_usage(store: SqlStore, f: UsageFilter, out: BinaryIO, fmt: str = "csv",
                 progress: Progress | None = None) -> int:
    """Write the rows as the API serves them: its CSV (header once), or one row_json per line. Returns the count."""
    if fmt == "csv":
        out.write(CSV_HEADER_LINE.encode())
    written = 0
    for rows in usage_chunks(store, f):
        if fmt == "csv":
            for text in csv_lines(rows, header=False):
                out.write(text.encode())
        else:
            out.write(b"".join(dumps(row_json(row)) + b"\n" for row in rows))
        written += len(rows)
        if progress:
            progress(written)
    return written
