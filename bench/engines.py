"""What the benchmark needs from a database engine, beside the product: named databases, a plain driver connection
for the references (the engine's ceiling and the naive peer), the engine's SQL for the references, and its version.

SQLite: one file per database in the work directory. PostgreSQL: one database per name on a server
(`--database-url`, USAGE_LEDGER_BENCH_DATABASE_URL, or postgresql://postgres@127.0.0.1:5432/postgres), named
`<prefix>_<name>` (prefix `ulbench` unless told), copied with CREATE DATABASE ... TEMPLATE and dropped afterwards.

The references write their SQL once, in the store's own notation (usage_ledger.store.sql): `?` for a parameter, `@ts`
for a timestamp parameter in epoch milliseconds, `ms(col)` to read a timestamp back as epoch milliseconds, and
`Engine.sql()` turns it into the engine's SQL with the store's own translation (integers on SQLite, timestamptz on
PostgreSQL), so that the same statements run on both.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import psycopg
import sqlalchemy as sa
from psycopg import sql as pgsql

from usage_ledger.store.sql import _translate
from usage_ledger.timeutil import MS_PER_DAY

from .gen import BenchUser
from .load import build_template, copy_db, remove_db

# The columns of usage_rows that ingest writes (id is the engine's).
INSERT_COLUMNS = ("uid", "ts", "sku", "price", "units", "amount", "currency", "notes", "request_id", "exec_ms",
                  "prompt_tokens", "completion_tokens", "kid")
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRES_URL_ENV = "USAGE_LEDGER_BENCH_DATABASE_URL"
DEFAULT_PREFIX = "ulbench"


class EngineUnavailable(RuntimeError):
    """The engine cannot be used (no server answers): the run stops before it starts."""


class Engine:
    name: str
    postgres = False
    begin_read = "BEGIN"  # how the store opens a read transaction (the ceiling's replay does the same)
    begin_write = "BEGIN"  # how the store opens a write transaction

    def url(self, name: str) -> str:
        raise NotImplementedError

    def remove(self, name: str) -> None:
        raise NotImplementedError

    def remove_all(self) -> None:
        """Remove every database of the run (unless --keep-data; SQLite's go with the work directory)."""

    def copy(self, source: str, target: str) -> None:
        """A fresh database `target` holding what `source` holds (the template of users and keys)."""
        raise NotImplementedError

    def build_template(self, name: str, users: list[BenchUser], now: int) -> None:
        """A migrated database `name` holding the users and their keys, through the store (bench/load.py)."""
        build_template(self.url(name), users, now)
        self.checkpoint(name)

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def connect(self, name: str) -> Any:
        """A DB-API connection configured as the product configures its own (durability included), in autocommit:
        the references issue BEGIN and COMMIT themselves. `.execute()` returns a cursor on both drivers."""
        raise NotImplementedError

    def size_bytes(self, name: str) -> int:
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def checkpoint(self, name: str) -> None:
        """Settle the database after a bulk load (SQLite: fold the WAL back into the file)."""

    def server_cpu_seconds(self) -> float:
        """CPU seconds the engine's server processes have used so far (0 for an engine inside this process): the
        run counts them as its own, not as other processes sharing the machine."""
        return 0.0

    def sql(self, statement: str) -> str:
        """A statement in the store's notation (`?`, `@ts`, `ms(col)`) as this engine's SQL: the store's own
        translation, so that the references bind and read timestamps exactly as the product does."""
        return _translate(statement, self.postgres)

    def utc_day(self, column: str) -> str:
        """The UTC day of a timestamp column, as a developer writes it by hand on this engine (the naive peer)."""
        raise NotImplementedError

    def raw_insert(self, name: str, rows: Sequence[tuple], per_tx: int) -> float:
        """The engine's ingest ceiling: rows (INSERT_COLUMNS, ts in epoch ms) INSERTed into usage_rows (same table,
        same indexes) in transactions of `per_tx` rows through the driver's executemany, no service around it; ts
        is bound with the store's own expression. (On PostgreSQL the service sends one INSERT over arrays instead,
        which is slower on the bare table: the ceiling is the faster form.) Returns the seconds taken."""
        marks = ", ".join("@ts" if column == "ts" else "?" for column in INSERT_COLUMNS)
        statement = self.sql(f"INSERT INTO usage_rows ({', '.join(INSERT_COLUMNS)}) VALUES ({marks})")
        c = self.connect(name)
        try:
            cursor = c.cursor()
            began = time.perf_counter()
            for i in range(0, len(rows), per_tx):
                cursor.execute(self.begin_write)
                cursor.executemany(statement, rows[i:i + per_tx])  # psycopg 3 pipelines it: no round trip a row
                cursor.execute("COMMIT")
            return time.perf_counter() - began
        finally:
            c.close()


class SqliteEngine(Engine):
    name = "sqlite"
    begin_write = "BEGIN IMMEDIATE"  # the store takes the write lock up front

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

    def utc_day(self, column: str) -> str:
        return f"{column} / {MS_PER_DAY}"  # ts is integer epoch ms


class PostgresEngine(Engine):
    """Databases `<prefix>_<name>` on a PostgreSQL server: the template built through the store into an empty
    database, every fresh one copied from it with CREATE DATABASE ... TEMPLATE; psycopg connections for the
    references, with the server's durability as the product has it (synchronous_commit on, untouched); ts is a
    timestamptz there, which the store's translation (Engine.sql) writes from and reads back as epoch ms."""
    name = "postgresql"
    postgres = True
    begin_read = "BEGIN ISOLATION LEVEL REPEATABLE READ"  # as SqlStore._read on PostgreSQL

    def __init__(self, workdir: Path, url: str | None = None, prefix: str = DEFAULT_PREFIX) -> None:
        self.workdir = workdir
        given = url or os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL
        try:
            server = sa.engine.make_url(given)
        except sa.exc.ArgumentError as exc:
            raise ValueError(f"not a database URL: {exc}") from None
        if server.get_backend_name() != "postgresql":
            raise ValueError(f"--database-url must be a postgresql:// URL, not {server.drivername}://")
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,39}", prefix):
            raise ValueError(f"database prefix {prefix!r}: lower-case letters, digits and _, at most 40")
        self.server = server.set(drivername="postgresql")  # libpq's own URL form, for psycopg and the store alike
        self.prefix = prefix
        self._names: set[str] = set()  # databases this run created, dropped by remove_all()
        self._postmaster: int | None = None

    def database(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    def url(self, name: str) -> str:
        return self.server.set(database=self.database(name)).render_as_string(hide_password=False)

    def _server_url(self) -> str:
        return self.server.render_as_string(hide_password=False)

    def _admin(self, statement: Any, params: Sequence = ()) -> list[tuple]:
        """A statement on the server's maintenance database (the URL's own), in autocommit."""
        with psycopg.connect(self._server_url(), autocommit=True, connect_timeout=10) as c:
            cursor = c.execute(statement, params)
            return cursor.fetchall() if cursor.description else []

    def _ident(self, name: str) -> Any:
        return pgsql.Identifier(self.database(name))

    def remove(self, name: str) -> None:
        self._admin(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(self._ident(name)))
        self._names.discard(name)

    def remove_all(self) -> None:
        for name in sorted(self._names | {"template", "main"}):
            self.remove(name)

    def create(self, name: str) -> None:
        self.remove(name)
        self._names.add(name)
        self._admin(pgsql.SQL("CREATE DATABASE {}").format(self._ident(name)))

    def copy(self, source: str, target: str) -> None:
        # CREATE DATABASE ... TEMPLATE refuses while anything is connected to the source: every store and
        # connection on the template is closed by then (build_template closes its store; nothing else opens it).
        self.remove(target)
        self._names.add(target)
        self._admin(pgsql.SQL("CREATE DATABASE {} TEMPLATE {}").format(self._ident(target), self._ident(source)))

    def build_template(self, name: str, users: list[BenchUser], now: int) -> None:
        self.create(name)
        super().build_template(name, users, now)

    def exists(self, name: str) -> bool:
        return bool(self._admin("SELECT 1 FROM pg_database WHERE datname = %s", (self.database(name),)))

    def connect(self, name: str) -> Any:
        # Autocommit, as sqlite3's isolation_level=None: the references issue BEGIN/COMMIT. Durability is the
        # server's (synchronous_commit on by default), which the product leaves as it is too.
        return psycopg.connect(self.url(name), autocommit=True)

    def size_bytes(self, name: str) -> int:
        return self._admin("SELECT pg_database_size(%s)", (self.database(name),))[0][0]

    def version(self) -> str:
        try:
            version = self._admin("SHOW server_version")[0][0]
        except psycopg.OperationalError as exc:
            shown = self.server.render_as_string(hide_password=True)
            raise EngineUnavailable(f"no PostgreSQL server answers at {shown} "
                                    f"({str(exc).strip().splitlines()[0]}); pass --database-url") from None
        return f"PostgreSQL {version.split()[0]}"

    def checkpoint(self, name: str) -> None:
        # After the bulk load: VACUUM ANALYZE, so that the planner has statistics for the measured queries (and the
        # visibility map lets index-only scans skip the heap) rather than whenever autovacuum gets to it; then a
        # CHECKPOINT, so that the load's dirty buffers are not written out during the measurements.
        c = self.connect(name)
        try:
            c.execute("VACUUM ANALYZE")
            c.execute("CHECKPOINT")
        finally:
            c.close()

    def server_cpu_seconds(self) -> float:
        """The server's CPU seconds from /proc: the postmaster's own and its reaped children's (backends that have
        exited), plus its live children's. 0 when the server is not on this machine. Every database's work on the
        server counts, not only this run's."""
        if self._postmaster is None:
            self._postmaster = 0
            try:
                with psycopg.connect(self._server_url(), autocommit=True, connect_timeout=10) as c:
                    backend = c.execute("SELECT pg_backend_pid()").fetchone()[0]
                    stat = _proc_stat(backend)  # read while the backend lives: its parent is the postmaster
                if stat is not None:
                    parent = int(stat[1])
                    with open(f"/proc/{parent}/comm") as f:
                        if f.read().strip().startswith("postgres"):
                            self._postmaster = parent
            except (OSError, ValueError, psycopg.Error):
                pass
        if not self._postmaster:
            return 0.0
        tick = os.sysconf("SC_CLK_TCK")
        stat = _proc_stat(self._postmaster)
        if stat is None:
            return 0.0
        total = sum(int(x) for x in stat[11:15])  # utime, stime, cutime, cstime
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                child = _proc_stat(int(entry))
                if child is not None and int(child[1]) == self._postmaster:
                    total += int(child[11]) + int(child[12])
        return total / tick

    def utc_day(self, column: str) -> str:
        return f"({column} AT TIME ZONE 'UTC')::date"


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (state first), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def make_engine(name: str, workdir: Path, url: str | None = None, prefix: str = DEFAULT_PREFIX) -> Engine:
    if name == "sqlite":
        return SqliteEngine(workdir)
    if name == "postgresql":
        return PostgresEngine(workdir, url, prefix)
    raise ValueError(f"unknown engine {name!r}")


def fetch_rows(engine: Engine, name: str) -> list[tuple]:
    """Every usage row of a database, as INSERT_COLUMNS tuples (ts in epoch ms), in id order."""
    c = engine.connect(name)
    try:
        columns = ", ".join("ms(ts)" if column == "ts" else column for column in INSERT_COLUMNS)
        return c.execute(engine.sql(f"SELECT {columns} FROM usage_rows ORDER BY id")).fetchall()
    finally:
        c.close()


def scalar(c: Any, statement: str, params: Iterable = ()) -> Any:
    return c.execute(statement, tuple(params)).fetchone()[0]
