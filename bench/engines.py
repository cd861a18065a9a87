"""What the benchmark needs from a database engine, beside the product: named databases in a work directory, a
plain driver connection for the references (the engine's ceiling and the naive peer), and its version.

SQLite is implemented; PostgreSQL is declared so that `--engine postgresql` has one place to land.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from .load import copy_db, remove_db

# The columns of usage_rows that ingest writes (id is the engine's).
INSERT_COLUMNS = ("uid", "ts", "sku", "price", "units", "amount", "currency", "notes", "request_id", "exec_ms",
                  "prompt_tokens", "completion_tokens", "kid")


class Engine:
    name: str
    paramstyle: str  # "qmark" or "format": how raw statements mark their parameters

    def url(self, name: str) -> str:
        raise NotImplementedError

    def remove(self, name: str) -> None:
        raise NotImplementedError

    def copy(self, source: str, target: str) -> None:
        """A fresh database `target` holding what `source` holds (the template of users and keys)."""
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def connect(self, name: str) -> Any:
        """A DB-API connection configured as the product configures its own (durability included)."""
        raise NotImplementedError

    def size_bytes(self, name: str) -> int:
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def checkpoint(self, name: str) -> None:
        """Settle the database after a bulk load (SQLite: fold the WAL back into the file)."""

    def sql(self, statement: str) -> str:
        return statement if self.paramstyle == "qmark" else statement.replace("?", "%s")

    def raw_insert(self, name: str, rows: Sequence[tuple], per_tx: int) -> float:
        """The engine's ingest ceiling: rows INSERTed into usage_rows (same table, same indexes) in transactions of
        `per_tx` rows through the driver, no service around it. Returns the seconds taken."""
        raise NotImplementedError


class SqliteEngine(Engine):
    name = "sqlite"
    paramstyle = "qmark"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def path(self, name: str) -> Path:
        return self.workdir / f"{name}.db"

    def url(self, name: str) -> str:
        return f"sqlite:///{self.path(name)}"

    def remove(self, name: str) -> None:
        remove_db(self.path(name))

    def copy(self, source: str, target: str) -> None:
        copy_db(self.path(source), self.path(target))

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def connect(self, name: str) -> sqlite3.Connection:
        # The product's settings (store/sql.py): WAL, synchronous=FULL, explicit transactions.
        c = sqlite3.connect(self.path(name), isolation_level=None, check_same_thread=False)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=FULL")
        c.execute("PRAGMA busy_timeout=30000")
        return c

    def size_bytes(self, name: str) -> int:
        return sum(p.stat().st_size for p in (Path(f"{self.path(name)}{s}") for s in ("", "-wal")) if p.exists())

    def version(self) -> str:
        return f"SQLite {sqlite3.sqlite_version}"

    def checkpoint(self, name: str) -> None:
        c = self.connect(name)
        try:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            c.close()

    def raw_insert(self, name: str, rows: Sequence[tuple], per_tx: int) -> float:
        c = self.connect(name)
        statement = (f"INSERT INTO usage_rows ({', '.join(INSERT_COLUMNS)}) "
                     f"VALUES ({', '.join('?' * len(INSERT_COLUMNS))})")
        try:
            began = time.perf_counter()
            for i in range(0, len(rows), per_tx):
                c.execute("BEGIN IMMEDIATE")
                c.executemany(statement, rows[i:i + per_tx])
                c.execute("COMMIT")
            return time.perf_counter() - began
        finally:
            c.close()


class PostgresEngine(Engine):
    """Not written yet, although the product's PostgreSQL store has landed. What it needs: databases created with
    CREATE DATABASE ... TEMPLATE from a template database holding the users and keys; a psycopg connection for the
    references; raw_insert with the store's own statement translation (ts is a timestamptz there, written from
    epoch milliseconds); and the naive peer's SQL and data_profile's checks on timestamptz instead of integer ms."""
    name = "postgresql"
    paramstyle = "format"

    def __init__(self, workdir: Path, url: str | None = None) -> None:
        raise NotImplementedError("the PostgreSQL engine of the benchmark is not written yet (see PostgresEngine in "
                                  "bench/engines.py); run with --engine sqlite")


def make_engine(name: str, workdir: Path, url: str | None = None) -> Engine:
    if name == "sqlite":
        return SqliteEngine(workdir)
    if name == "postgresql":
        return PostgresEngine(workdir, url)
    raise ValueError(f"unknown engine {name!r}")


def fetch_rows(engine: Engine, name: str) -> list[tuple]:
    """Every usage row of a database, as INSERT_COLUMNS tuples, in id order."""
    c = engine.connect(name)
    try:
        return c.execute(f"SELECT {', '.join(INSERT_COLUMNS)} FROM usage_rows ORDER BY id").fetchall()
    finally:
        c.close()


def scalar(c: Any, statement: str, params: Iterable = ()) -> Any:
    return c.execute(statement, tuple(params)).fetchone()[0]
