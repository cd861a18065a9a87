"""The SQL store (SQLAlchemy Core): SQLite, the embedded default; PostgreSQL follows with the same statements.

Statements are written once and sent through the driver directly (exec_driver_sql), because the ingest and page
paths are hot. They use `?` for a parameter, `@ts` for a timestamp parameter in epoch milliseconds and `ms(col)` to
read a timestamp back as epoch milliseconds; _translate() turns those into each engine's own SQL (SQLite keeps
integers, PostgreSQL keeps timestamptz).
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections import defaultdict
from contextlib import contextmanager
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from ..ledger import NewRow
from ..timeutil import MS_PER_DAY, MS_PER_HOUR
from ..money import SPEND_CURRENCIES
from .rollups import ROLLUPS, fields
from .base import AnalyticsBuckets, ApiKey, Conflict, StoreError, UsageFilter, UsageRow, User

_NO_LOCK = contextlib.nullcontext()
# Bounds of an open range: whole days, so that an unbounded walk needs no raw edge counts.
MIN_MS = -(10**6) * MS_PER_DAY
MAX_MS = 10**7 * MS_PER_DAY
HOURS_PER_DAY = 24
_IN_CHUNK = 500

_ROW_SELECT = ("SELECT id, ms(ts), sku, price, units, amount, currency, notes, request_id, exec_ms, prompt_tokens, "
               "completion_tokens FROM usage_rows")
_KEY_SELECT = ("SELECT kid, id, uid, api_key_type, description, last6, ms(created_at), ms(expires_at), "
               "ms(last_used_at), ms(revoked_at), limit_usd, limit_diem, limit_vcu, limit_period, model_privacy FROM api_keys")
# Batches that queued behind SQLite's single writer share one transaction, at most this many of them.
MAX_GROUP = 32
T = TypeVar("T")


class _Job:
    """A write waiting for the shared transaction, and what became of it."""
    __slots__ = ("work", "done", "value", "error")

    def __init__(self, work: Callable[["SqlWriteTx"], Any]) -> None:
        self.work, self.done, self.value, self.error = work, False, None, None


_usage_row = partial(tuple.__new__, UsageRow)
# PostgreSQL array types of the columns ingest writes (the rest are bigint); ts arrives as epoch milliseconds.
_PG_ARRAY_TYPES = {"ts": "bigint", "sku": "text", "notes": "text", "request_id": "text", "currency": "smallint",
                   "key_hash": "bytea", "content_hash": "bytea"}
_PG_FROM_MS = "TIMESTAMPTZ 'epoch' + {} * INTERVAL '1 millisecond'"
_KEY_FIELDS = {"description", "expires_at", "limit_usd", "limit_diem", "limit_vcu", "limit_period", "model_privacy"}


_MS_COLUMN = re.compile(r"ms\((\w+)\)")


@lru_cache(maxsize=512)
def _translate(statement: str, postgres: bool) -> str:
    if not postgres:
        return _MS_COLUMN.sub(r"\1", statement).replace("@ts", "?")
    # psycopg reads % as a placeholder: a literal one (LIKE '%-mtoken' in the rollup rebuild) is written %%.
    statement = _MS_COLUMN.sub(r"(EXTRACT(EPOCH FROM \1) * 1000)::bigint", statement).replace("%", "%%")
    return statement.replace("?", "%s").replace("@ts", "(TIMESTAMPTZ 'epoch' + %s * INTERVAL '1 millisecond')")


@lru_cache(maxsize=64)
def _insert_sql(table: str, columns: tuple[str, ...], tail: str, postgres: bool) -> str:
    """The INSERT _insert_many sends: one row's values on SQLite, an array per column on PostgreSQL."""
    names = ", ".join(columns)
    if not postgres:
        return f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))}) {tail}"
    arrays = ", ".join(f"%s::{_PG_ARRAY_TYPES.get(name, 'bigint')}[]" for name in columns)
    values = ", ".join(_PG_FROM_MS.format(name) if name == "ts" else name for name in columns)
    # Ordered by position, so that usage rows take their ids in the batch's order, as on SQLite.
    return (f"INSERT INTO {table} ({names}) SELECT {values} FROM unnest({arrays}) WITH ORDINALITY "
            f"AS v({names}, position) ORDER BY position {tail}")


def _alembic_config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.attributes["connection"] = connection
    return config


class SqlStore:
    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        try:
            if self.is_sqlite:
                # As many connections as the server's worker threads (anyio's 40), so none is opened per request.
                self.engine = sa.create_engine(url, pool_size=pool_size, max_overflow=40,
                                               connect_args={"check_same_thread": False, "timeout": 30})
                self._install_sqlite_hooks()
            else:
                if url.startswith("postgresql://"):
                    url = "postgresql+psycopg://" + url[len("postgresql://"):]
                # JIT compiles any statement estimated above jit_above_cost; for the ledger's short statements it
                # only adds time (measured: the batch's key lookup 11 -> 7.5 ms without it, 39 ms when first seen).
                self.engine = sa.create_engine(url, pool_size=pool_size, max_overflow=16, pool_pre_ping=True,
                                               connect_args={"options": "-c jit=off"})
        except (sa.exc.ArgumentError, ImportError) as exc:
            shown = re.sub(r":[^:/@]*@", ":***@", url)  # start-up errors end up in logs: never the password
            raise StoreError(f"cannot use database URL {shown!r}: {exc}") from None
        # SQLite has one writer; serialising writers here keeps them from spinning on the file lock.
        self._write_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[_Job] = []

    def _install_sqlite_hooks(self) -> None:
        @sa.event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_connection, _record) -> None:
            # We issue BEGIN ourselves (below), so that reads get a snapshot and writes take the lock up front.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # A batch answered `recorded` must survive a power cut; one sync per batch is cheap.
            cursor.execute("PRAGMA synchronous=FULL")
            # Checkpoint the WAL every ~40 MB rather than every 4 MB: measured +15% ingest (bench/results notes).
            cursor.execute("PRAGMA wal_autocheckpoint=10000")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @sa.event.listens_for(self.engine, "begin")
        def _on_begin(connection: sa.Connection) -> None:
            write = connection.get_execution_options().get("ledger_write", False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    def _sql(self, statement: str) -> str:
        return _translate(statement, not self.is_sqlite)

    def _exec(self, c: sa.Connection, statement: str, params=()) -> sa.CursorResult:
        return c.exec_driver_sql(self._sql(statement), tuple(params))

    def _fetch(self, c: sa.Connection, statement: str, params=()) -> list[tuple]:
        """Every row as the driver's own tuple: the hot reads (exports, analytics) skip SQLAlchemy's Row objects,
        measured a third of their time."""
        result = self._exec(c, statement, params)
        try:
            return result.cursor.fetchall()
        finally:
            result.close()

    def _insert_many(self, c: sa.Connection, table: str, columns: tuple[str, ...], rows: list[tuple],
                     tail: str = "") -> None:
        """INSERT rows (tuples in `columns` order; `tail` is an ON CONFLICT clause). SQLite: one prepared statement
        stepped per row. PostgreSQL: one statement over an array per column, not psycopg's executemany (a pipelined
        statement per row, each built in this process under the GIL). Measured over HTTP, 4 clients, 100,000
        records: 9.2-11.0k rows/s with executemany for the plain INSERTs and arrays for the upserts, 11.6-12.2k with
        arrays for all (single-threaded in process the first was faster: the server-side work moves, not vanishes);
        7.3k in process with a statement per row everywhere."""
        if not rows:
            return
        statement = _insert_sql(table, columns, tail, not self.is_sqlite)
        if self.is_sqlite:
            c.exec_driver_sql(statement, rows)
        else:
            c.exec_driver_sql(statement, tuple(list(column) for column in zip(*rows)))

    # -- schema -------------------------------------------------------------------------------------------------

    def migrate(self) -> None:
        with self.engine.connect() as c:
            command.upgrade(_alembic_config(c), "head")
            c.commit()

    def pending_migrations(self) -> bool:
        with self.engine.connect() as c:
            head = ScriptDirectory.from_config(_alembic_config(c)).get_current_head()
            return MigrationContext.configure(c).get_current_revision() != head

    def check(self) -> None:
        with self.engine.connect() as c:
            self._exec(c, "SELECT 1 FROM meta WHERE name = ?", ("cursor_secret",)).fetchall()

    def meta(self, name: str) -> str | None:
        with self.engine.connect() as c:
            return self._exec(c, "SELECT value FROM meta WHERE name = ?", (name,)).scalar()

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        """One snapshot: a page's total and its rows always agree."""
        with self.engine.connect() as c:
            if not self.is_sqlite:
                c = c.execution_options(isolation_level="REPEATABLE READ")
            with c.begin():
                yield c

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        # SQLite has one writer: queue here rather than spin on the file lock. PostgreSQL writers run side by side,
        # serialised per user by lock_users().
        with self._write_lock if self.is_sqlite else _NO_LOCK, self.engine.connect() as c:
            c = c.execution_options(ledger_write=True)
            with c.begin():
                yield c

    def _lock_users(self, c: sa.Connection, uids: Iterable[int]) -> None:
        """PostgreSQL: a transaction-scoped lock per user, taken in id order so that two batches never deadlock."""
        if not self.is_sqlite:
            ordered = sorted(set(uids))
            if ordered:
                c.exec_driver_sql("SELECT COUNT(pg_advisory_xact_lock(u)) FROM unnest(%s::bigint[]) AS u", (ordered,))

    # -- users --------------------------------------------------------------------------------------------------

    def create_user(self, user_id: str, name: str, now: int) -> User:
        with self._write() as c:
            if self._exec(c, "SELECT 1 FROM users WHERE user_id = ?", (user_id,)).first():
                raise Conflict(f"user '{user_id}' exists")
            try:
                self._exec(c, "INSERT INTO users (user_id, name, created_at) VALUES (?, ?, @ts)", (user_id, name, now))
            except sa.exc.IntegrityError:
                raise Conflict(f"user '{user_id}' exists") from None
            uid = self._exec(c, "SELECT uid FROM users WHERE user_id = ?", (user_id,)).scalar_one()
        return User(uid, user_id, name, now)

    def get_user(self, user_id: str) -> User | None:
        if "\x00" in user_id:  # no stored id holds NUL (PostgreSQL text cannot): not found, on both engines
            return None
        with self.engine.connect() as c:
            row = self._exec(c, "SELECT uid, user_id, name, ms(created_at) FROM users WHERE user_id = ?", (user_id,)).first()
        return User(*row) if row else None

    def list_users(self, offset: int, limit: int) -> tuple[list[User], int]:
        with self._read() as c:
            total = self._exec(c, "SELECT COUNT(*) FROM users").scalar_one()
            rows = self._exec(c, "SELECT uid, user_id, name, ms(created_at) FROM users ORDER BY uid LIMIT ? OFFSET ?",
                              (limit, offset)).fetchall()
        return [User(*r) for r in rows], total

    # -- API keys -----------------------------------------------------------------------------------------------

    def create_key(self, key: ApiKey, secret_hash: bytes, max_active: int) -> ApiKey:
        with self._write() as c:
            self._lock_users(c, [key.uid])
            active = self._exec(c, "SELECT COUNT(*) FROM api_keys WHERE uid = ? AND revoked_at IS NULL",
                                (key.uid,)).scalar_one()
            if active >= max_active:
                raise Conflict(f"at most {max_active} active API keys per user")
            self._exec(c, "INSERT INTO api_keys (id, uid, secret_hash, api_key_type, description, last6, created_at, "
                          "expires_at, last_used_at, revoked_at, limit_usd, limit_diem, limit_vcu, limit_period, "
                          "model_privacy) VALUES (?, ?, ?, ?, ?, ?, @ts, @ts, NULL, NULL, ?, ?, ?, ?, ?)",
                       (key.id, key.uid, secret_hash, key.api_key_type, key.description, key.last6, key.created_at,
                        key.expires_at, key.limit_usd, key.limit_diem, key.limit_vcu, key.limit_period,
                        key.model_privacy))
            kid = self._exec(c, "SELECT kid FROM api_keys WHERE id = ?", (key.id,)).scalar_one()
        return ApiKey(**{**_asdict(key), "kid": kid})

    def key_by_hash(self, secret_hash: bytes) -> tuple[ApiKey, bytes] | None:
        with self.engine.connect() as c:
            row = self._exec(c, _KEY_SELECT.replace(" FROM", ", secret_hash FROM") + " WHERE secret_hash = ?",
                             (secret_hash,)).first()
        return (ApiKey(*row[:-1]), bytes(row[-1])) if row else None

    def list_keys(self, uid: int, offset: int = 0, limit: int | None = None) -> list[ApiKey]:
        statement = _KEY_SELECT + " WHERE uid = ? AND revoked_at IS NULL ORDER BY created_at DESC, kid DESC"
        params: list = [uid]
        if limit is not None:
            statement += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        with self.engine.connect() as c:
            return [ApiKey(*r) for r in self._exec(c, statement, params)]

    def get_key(self, uid: int, key_id: str) -> ApiKey | None:
        if "\x00" in key_id:  # as in get_user
            return None
        with self.engine.connect() as c:
            row = self._exec(c, _KEY_SELECT + " WHERE uid = ? AND id = ? AND revoked_at IS NULL", (uid, key_id)).first()
        return ApiKey(*row) if row else None

    def update_key(self, uid: int, key_id: str, changes: dict) -> ApiKey | None:
        unknown = set(changes) - _KEY_FIELDS
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        if "\x00" in key_id:  # as in get_user
            return None
        if changes:
            assignments = ", ".join(f"{name} = {'@ts' if name == 'expires_at' else '?'}" for name in changes)
            with self._write() as c:
                self._exec(c, f"UPDATE api_keys SET {assignments} WHERE uid = ? AND id = ? AND revoked_at IS NULL",
                           [*changes.values(), uid, key_id])
        return self.get_key(uid, key_id)

    def revoke_key(self, uid: int, key_id: str, now: int) -> bool:
        if "\x00" in key_id:  # as in get_user
            return False
        with self._write() as c:
            result = self._exec(c, "UPDATE api_keys SET revoked_at = @ts WHERE uid = ? AND id = ? AND revoked_at IS NULL",
                                (now, uid, key_id))
            return result.rowcount > 0

    def touch_key(self, kid: int, now: int) -> None:
        with self._write() as c:
            self._exec(c, "UPDATE api_keys SET last_used_at = @ts WHERE kid = ?", (now, kid))

    def key_spend_since(self, uid: int, first_day: int) -> dict[tuple[int, int], int]:
        """Debit spend per (kid, currency) from first_day (days since the epoch) on."""
        with self.engine.connect() as c:
            rows = self._exec(c, "SELECT kid, currency, SUM(spend) FROM rollup_key_daily WHERE uid = ? AND day >= ? "
                                 "GROUP BY kid, currency", (uid, first_day))
            return {(kid, cur): int(spend) for kid, cur, spend in rows}

    # -- ledger -------------------------------------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator["SqlWriteTx"]:
        with self._write() as c:
            yield SqlWriteTx(self, c)

    def write_shared(self, work: Callable[["SqlWriteTx"], T]) -> T:
        """Run `work` in a write transaction, sharing its commit with the writes queued beside it.

        SQLite has a single writer, and each commit costs a WAL sync: whoever takes the write lock runs every job
        queued behind it (up to MAX_GROUP) in one transaction, each in its own savepoint so that one job's failure
        never undoes another's, then commits once. Each caller returns only after the commit that holds its work,
        so an answered batch is as durable as before. PostgreSQL's writers already run side by side: one
        transaction each."""
        try:
            if not self.is_sqlite:
                with self.write() as tx:
                    return work(tx)
            job = _Job(work)
            with self._queue_lock:
                self._queue.append(job)
            with self._write_lock:
                if not job.done:
                    with self._queue_lock:
                        group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
                    self._commit_group(group)
            if job.error is not None:
                raise job.error
            return job.value
        except sa.exc.OperationalError as exc:  # unreachable, locked past the timeout, disk full, ...
            raise StoreError(f"the write could not be committed: {exc}") from exc

    def _commit_group(self, group: list[_Job]) -> None:
        try:
            with self.engine.connect() as c:
                c = c.execution_options(ledger_write=True)
                with c.begin():
                    tx = SqlWriteTx(self, c)
                    for job in group:
                        try:
                            with c.begin_nested():
                                job.value = job.work(tx)
                        except Exception as exc:  # this job's own failure: its savepoint is rolled back
                            job.error = exc
                            if not c.connection.driver_connection.in_transaction:
                                # SQLite rolled back the whole transaction (disk full, I/O error): the jobs before
                                # this one are gone too, so the group fails as one
                                raise
        except BaseException as exc:  # BEGIN or COMMIT failed: none of the group is stored
            for job in group:
                job.value = None
                job.error = StoreError(f"the write could not be committed: {exc}")
                job.error.__cause__ = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            for job in group:
                job.done = True

    def balances(self, uid: int) -> dict[int, int]:
        with self.engine.connect() as c:
            return dict(self._exec(c, "SELECT currency, amount FROM balances WHERE uid = ?", (uid,)).fetchall())

    # -- usage --------------------------------------------------------------------------------------------------

    def _where(self, f: UsageFilter, lo: int, hi: int) -> tuple[str, list]:
        clause, params = "uid = ?", [f.uid]
        if f.currency is not None:
            clause += " AND currency = ?"
            params.append(f.currency)
        return clause + " AND ts >= @ts AND ts < @ts", [*params, lo, hi]

    def _raw_count(self, c: sa.Connection, f: UsageFilter, lo: int, hi: int) -> int:
        clause, params = self._where(f, lo, hi)
        return self._exec(c, f"SELECT COUNT(*) FROM usage_rows WHERE {clause}", params).scalar_one()

    def _bucket_counts(self, c: sa.Connection, f: UsageFilter, table: str, grain: str, width: int,
                       first: int, stop: int) -> list[tuple[int, int, int]]:
        if first >= stop:
            return []
        clause, params = "uid = ?", [f.uid]
        if f.currency is not None:
            clause += " AND currency = ?"
            params.append(f.currency)
        rows = self._exec(c, f"SELECT {grain}, SUM(n) FROM {table} WHERE {clause} AND {grain} >= ? AND {grain} < ? "
                             f"GROUP BY {grain} ORDER BY {grain}", [*params, first, stop]).fetchall()
        return [(b * width, (b + 1) * width, int(n)) for b, n in rows if n]

    def _hours(self, c, f, first, stop):
        return self._bucket_counts(c, f, "rollup_hourly", "hour", MS_PER_HOUR, first, stop)

    def _segments(self, c: sa.Connection, f: UsageFilter) -> list[tuple[int, int, int]]:
        """[lo, hi) time segments in ascending order with their row counts, read from the rollups: raw counts for
        the partial hours at the edges, hours up to the first and from the last whole day, whole days between."""
        lo = MIN_MS if f.start is None else max(f.start, MIN_MS)
        hi = MAX_MS if f.end is None else min(f.end, MAX_MS)
        if lo >= hi:
            return []
        h_lo, h_hi = -(-lo // MS_PER_HOUR), hi // MS_PER_HOUR
        if h_lo >= h_hi:
            return [(lo, hi, self._raw_count(c, f, lo, hi))]
        segments = []
        if lo < h_lo * MS_PER_HOUR:
            segments.append((lo, h_lo * MS_PER_HOUR, self._raw_count(c, f, lo, h_lo * MS_PER_HOUR)))
        d_lo, d_hi = -(-h_lo // HOURS_PER_DAY), h_hi // HOURS_PER_DAY
        if d_lo < d_hi:
            segments += self._hours(c, f, h_lo, d_lo * HOURS_PER_DAY)
            segments += self._bucket_counts(c, f, "rollup_daily", "day", MS_PER_DAY, d_lo, d_hi)
            segments += self._hours(c, f, d_hi * HOURS_PER_DAY, h_hi)
        else:
            segments += self._hours(c, f, h_lo, h_hi)
        if h_hi * MS_PER_HOUR < hi:
            segments.append((h_hi * MS_PER_HOUR, hi, self._raw_count(c, f, h_hi * MS_PER_HOUR, hi)))
        return [s for s in segments if s[2]]

    def count(self, f: UsageFilter) -> int:
        with self._read() as c:
            return sum(n for _, _, n in self._segments(c, f))

    def usage_page(self, f: UsageFilter, *, descending: bool, offset: int, limit: int) -> tuple[int, list[UsageRow]]:
        """`total` and the rows [offset, offset + limit) of the filtered rows in (ts, id) order, without an OFFSET
        over the user's rows: the rollups say which hour the page starts in, and only that hour is skipped into."""
        with self._read() as c:
            segments = self._segments(c, f)
            total = sum(n for _, _, n in segments)
            if offset >= total or limit <= 0:
                return total, []
            if descending:
                segments.reverse()
            seen = 0
            for segment in segments:
                if seen + segment[2] > offset:
                    break
                seen += segment[2]
            lo, hi, n = segment
            if hi - lo > MS_PER_HOUR:  # a whole day: find the hour inside it
                hours = self._hours(c, f, lo // MS_PER_HOUR, hi // MS_PER_HOUR)
                for lo, hi, n in (reversed(hours) if descending else hours):
                    if seen + n > offset:
                        break
                    seen += n
            skip = offset - seen
            start = f.start if f.start is not None else MIN_MS
            end = f.end if f.end is not None else MAX_MS
            if descending:
                clause, params = self._where(f, start, hi)
                order = "ts DESC, id DESC"
            else:
                clause, params = self._where(f, lo, end)
                order = "ts, id"
            rows = self._exec(c, f"{_ROW_SELECT} WHERE {clause} ORDER BY {order} LIMIT ? OFFSET ?",
                              [*params, limit, skip]).fetchall()
        return total, [UsageRow(*r) for r in rows]

    def usage_after(self, f: UsageFilter, after: tuple[int, int] | None, limit: int, max_id: int) -> list[UsageRow]:
        """Up to `limit` rows after the keyset position `after`, ascending, none newer than max_id."""
        start = f.start if f.start is not None else MIN_MS
        end = f.end if f.end is not None else MAX_MS
        if after is not None:
            start = max(start, after[0])
        clause, params = self._where(f, start, end)
        clause += " AND id <= ?"
        params.append(max_id)
        if after is not None:
            clause += " AND (ts > @ts OR id > ?)"
            params += [after[0], after[1]]
        with self.engine.connect() as c:
            # Made UsageRows without a per-row Python call: exports read every row here.
            return list(map(_usage_row, self._fetch(c, f"{_ROW_SELECT} WHERE {clause} ORDER BY ts, id LIMIT ?",
                                                    [*params, limit])))

    def analytics_buckets(self, uid: int, bounds: Sequence[int], *, hourly: bool) -> AnalyticsBuckets:
        """Spend sums per day, where day i is [bounds[i], bounds[i + 1]) (ms on the grain's boundaries), from the
        narrow rollups in one snapshot. The database folds hours into days, so only day-sized sums cross over."""
        grain, width, suffix = ("hour", MS_PER_HOUR, "hourly") if hourly else ("day", MS_PER_DAY, "daily")
        cuts = [b // width for b in bounds]
        day = _interval_index_sql(grain, cuts)
        spend_currencies = ", ".join(str(c) for c in SPEND_CURRENCIES)
        where = f"uid = ? AND {grain} >= ? AND {grain} < ? AND currency IN ({spend_currencies})"
        params = (uid, cuts[0], cuts[-1])

        def grouped(c, columns: str, values: tuple[str, ...], table: str) -> list:
            if not hourly:  # one rollup row per (day, columns) already: nothing to add up
                return self._fetch(c, f"SELECT {day}, {columns}, {', '.join(values)} FROM {table} WHERE {where}",
                                   params)
            sums = ", ".join(f"CAST(SUM({v}) AS BIGINT)" for v in values)
            return self._fetch(c, f"SELECT {day} AS d, {columns}, {sums} FROM {table} WHERE {where} "
                                  f"GROUP BY d, {columns}", params)

        with self._read() as c:
            return AnalyticsBuckets(
                by_currency=grouped(c, "currency", ("spend",), f"rollup_{suffix}"),
                by_sku=grouped(c, "sku, currency", ("spend", "units"), f"rollup_sku_{suffix}"),
                by_key=grouped(c, "kid, currency", ("spend", "units_milli"), f"rollup_key_{suffix}"))

    def keys_by_kid(self, uid: int, kids: Iterable[int]) -> dict[int, ApiKey]:
        """A user's keys by internal id, revoked ones included (history keeps their names)."""
        kids = list(kids)
        if not kids:
            return {}
        with self.engine.connect() as c:
            rows = self._exec(c, f"{_KEY_SELECT} WHERE uid = ? AND kid IN ({', '.join('?' * len(kids))})",
                              [uid, *kids]).fetchall()
        return {row[0]: ApiKey(*row) for row in rows}

    def rebuild_rollups(self) -> None:
        """Recompute every rollup from the rows (`usage-ledger rollups rebuild`)."""
        with self._write() as c:
            for rollup in ROLLUPS:
                for statement in rollup.rebuild_sql():
                    self._exec(c, statement)

    def rollup_contents(self) -> dict[str, list[tuple]]:
        """Every rollup's rows, sorted: for checking the maintained rollups against a rebuild."""
        with self._read() as c:
            return {r.table: sorted(tuple(row) for row in self._exec(c, f"SELECT {', '.join((*r.keys, *r.values))} "
                                                                        f"FROM {r.table}"))
                    for r in ROLLUPS}

    def max_row_id(self) -> int:
        with self.engine.connect() as c:
            return self._exec(c, "SELECT COALESCE(MAX(id), 0) FROM usage_rows").scalar_one()


def _interval_index_sql(column: str, cuts: list[int]) -> str:
    """SQL for "which interval [cuts[i], cuts[i + 1]) holds `column`": piecewise arithmetic over runs of equal
    intervals (days are 24 hours except around daylight-saving changes), so a row costs a branch or two, not one
    comparison per day."""
    branches, i = [], 0
    while i < len(cuts) - 1:
        step = cuts[i + 1] - cuts[i]
        j = i + 1
        while j < len(cuts) - 1 and cuts[j + 1] - cuts[j] == step:
            j += 1
        branches.append(f"WHEN {column} < {cuts[j]} THEN {i} + ({column} - {cuts[i]}) / {step}")
        i = j
    return "CASE " + " ".join(branches) + " END"


def _asdict(key: ApiKey) -> dict:
    return {name: getattr(key, name) for name in ApiKey.__slots__}


class SqlWriteTx:
    """One write transaction of the ledger (ledger.WriteTx)."""

    def __init__(self, store: SqlStore, connection: sa.Connection) -> None:
        self._store, self._c = store, connection

    def _select_in(self, head: str, values: list, tail: str = "", params: tuple = ()) -> list:
        out = []
        for i in range(0, len(values), _IN_CHUNK):
            chunk = values[i:i + _IN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            out += self._store._exec(self._c, f"{head} ({marks}){tail}", [*params, *chunk]).fetchall()
        return out

    def lock_users(self, uids: Iterable[int]) -> None:
        self._store._lock_users(self._c, uids)

    def user_uids(self, user_ids: Iterable[str]) -> dict[str, int]:
        rows = self._select_in("SELECT user_id, uid FROM users WHERE user_id IN", list(user_ids))
        return dict(rows)

    def key_owners(self, key_ids: Iterable[str]) -> dict[str, tuple[int, int]]:
        rows = self._select_in("SELECT id, kid, uid FROM api_keys WHERE id IN", list(key_ids))
        return {key_id: (kid, uid) for key_id, kid, uid in rows}

    def claimed_keys(self, keys: Iterable[tuple[int, bytes]]) -> dict[tuple[int, bytes], bytes]:
        # One statement for all the batch's users, and a primary-key lookup per key whatever the planner knows:
        # on PostgreSQL a plain join may become a hash join over the whole table when statistics are missing or
        # stale (seen while bulk loading with autovacuum off), so the lookup is a LATERAL that cannot be flattened;
        # SQLite plans the VALUES join as a loop of primary-key searches (a row-value IN would scan).
        pairs = list(keys)
        if not pairs:
            return {}
        if not self._store.is_sqlite:
            rows = self._c.exec_driver_sql(
                "SELECT k.uid, k.key_hash, k.content_hash FROM unnest(%s::bigint[], %s::bytea[]) AS v(uid, key_hash) "
                "CROSS JOIN LATERAL (SELECT uid, key_hash, content_hash FROM idempotency_keys "
                "WHERE uid = v.uid AND key_hash = v.key_hash OFFSET 0) AS k",
                ([uid for uid, _ in pairs], [key for _, key in pairs])).fetchall()
            return {(uid, bytes(k)): bytes(v) for uid, k, v in rows}
        out = {}
        for i in range(0, len(pairs), _IN_CHUNK):
            chunk = pairs[i:i + _IN_CHUNK]
            values = ", ".join(["(?, ?)"] * len(chunk))
            rows = self._store._exec(
                self._c, f"SELECT i.uid, i.key_hash, i.content_hash FROM (VALUES {values}) AS v "
                         f"JOIN idempotency_keys AS i ON i.uid = v.column1 AND i.key_hash = v.column2",
                [x for pair in chunk for x in pair]).fetchall()
            out.update({(uid, bytes(k)): bytes(v) for uid, k, v in rows})
        return out

    def balances(self, uids: Iterable[int]) -> dict[tuple[int, int], int]:
        rows = self._select_in("SELECT uid, currency, amount FROM balances WHERE uid IN", list(uids))
        return {(uid, cur): amount for uid, cur, amount in rows}

    def append(self, rows: list[NewRow], claims: list[tuple[int, bytes, bytes]]) -> None:
        insert = self._store._insert_many
        insert(self._c, "usage_rows", NewRow._fields, rows)
        insert(self._c, "idempotency_keys", ("uid", "key_hash", "content_hash"), claims)
        balance: dict[tuple, int] = defaultdict(int)
        for r in rows:
            balance[(r.uid, r.currency)] += r.amount
        insert(self._c, "balances", ("uid", "currency", "amount"), [(*k, v) for k, v in balance.items()],
               "ON CONFLICT (uid, currency) DO UPDATE SET amount = balances.amount + excluded.amount")
        folded_rows = [fields(r) for r in rows]
        debit_rows = [f for f, r in zip(folded_rows, rows) if r.amount <= 0]  # credits and refunds are not usage
        for rollup in ROLLUPS:
            folded = rollup.fold(debit_rows if rollup.debits_only else folded_rows)
            insert(self._c, rollup.table, rollup.columns, folded, rollup.on_conflict())
