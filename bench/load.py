"""Filling a database through the product's own paths: users and keys through the store, usage through ledger.record.

The template (users and keys, no usage) is built once per run and copied for every fresh database the run needs.
"""

from __future__ import annotations

import multiprocessing
import shutil
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from usage_ledger.catalog import Catalog
from usage_ledger.keys import MAX_ACTIVE_KEYS, secret_hash
from usage_ledger.ledger import record
from usage_ledger.store.base import ApiKey
from usage_ledger.store.sql import SqlStore

from .gen import BenchUser


def sqlite_files(path: Path) -> list[Path]:
    return [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")]


def remove_db(path: Path) -> None:
    for p in sqlite_files(path):
        p.unlink(missing_ok=True)


def copy_db(source: Path, target: Path) -> None:
    """A closed SQLite database, copied with its WAL (a checkpointed template has none)."""
    remove_db(target)
    for src, dst in zip(sqlite_files(source), sqlite_files(target)):
        if src.exists():
            shutil.copyfile(src, dst)


def build_template(url: str, users: list[BenchUser], now: int) -> None:
    """A migrated database with the users and their keys (deterministic ids and secrets), no usage; the engine
    settles it afterwards (Engine.build_template)."""
    store = SqlStore(url)
    try:
        store.migrate()
        for user in users:
            created = store.create_user(user.user_id, user.name, now)
            for key in user.keys:
                store.create_key(ApiKey(kid=0, id=key.id, uid=created.uid, api_key_type=key.api_key_type,
                                        description=key.description, last6=key.secret[-6:], created_at=now,
                                        expires_at=None, last_used_at=None, revoked_at=None, limit_usd=None,
                                        limit_diem=None, limit_vcu=None, limit_period="EPOCH", model_privacy="ALL"),
                                 secret_hash(key.secret), MAX_ACTIVE_KEYS)
    finally:
        store.close()


@dataclass
class LoadStats:
    records: int = 0
    recorded: int = 0
    refused: int = 0
    batches: int = 0
    seconds: float = 0.0
    first_error: str | None = None


def load_batches(store: SqlStore, catalog: Catalog, batches: Iterable[list[dict[str, Any]]], now: int,
                 progress: Callable[[LoadStats], None] | None = None, progress_every: float = 30.0) -> LoadStats:
    """ledger.record, one write transaction per batch, as `usage-ledger ingest` and POST /ledger/records do."""
    stats = LoadStats()
    began = last = time.perf_counter()
    for chunk in batches:
        outcomes = record(store, chunk, catalog, now)
        stats.records += len(chunk)
        stats.batches += 1
        for o in outcomes:
            if o.status == "recorded":
                stats.recorded += 1
            else:
                stats.refused += 1
                if stats.first_error is None:
                    stats.first_error = f"{o.status}: {o.error}: {chunk[o.index]}"
        if progress and time.perf_counter() - last >= progress_every:
            last = time.perf_counter()
            stats.seconds = last - began
            progress(stats)
    stats.seconds = time.perf_counter() - began
    return stats


def _produce(records: Callable[[], Iterable[dict[str, Any]]], batch: int, queue) -> None:
    it = iter(records())
    while chunk := list(islice(it, batch)):
        queue.put(chunk)
    queue.put(None)


def batches_in_child(records: Callable[[], Iterable[dict[str, Any]]], batch: int) -> Iterator[list[dict[str, Any]]]:
    """Batches of `records()` generated in a forked child process, so that generating the data runs on the other
    core while this one writes. Deterministic: the child runs the same seeded generator."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue(maxsize=8)
    child = ctx.Process(target=_produce, args=(records, batch, queue), daemon=True)
    child.start()
    try:
        while (chunk := queue.get()) is not None:
            yield chunk
        child.join(30)
    finally:
        if child.is_alive():
            child.terminate()
            child.join(10)


def batches(records: Iterable[dict[str, Any]], batch: int) -> Iterator[list[dict[str, Any]]]:
    it = iter(records)
    while chunk := list(islice(it, batch)):
        yield chunk
