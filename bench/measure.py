"""The figures of issue 5, one function per row of its table, each against a real `usage-ledger serve` process
(or the `usage-ledger` command), with the engine's ceiling and the naive peer measured on the same data."""

from __future__ import annotations

import math
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import sqlalchemy as sa

from usage_ledger.analytics import resolve_range
from usage_ledger.money import CURRENCY_NAMES
from usage_ledger.store.base import UsageFilter
from usage_ledger.store.sql import SqlStore
from usage_ledger.timeutil import MS_PER_DAY, now_ms, parse_instant
from usage_ledger.usage import dumps

from . import naive
from .client import (TIMEOUT, check, percentile, post_all, summary_ms, throughput, time_calls, time_requests,
                     walk_history)
from .engines import Engine, fetch_rows
from .gen import BenchUser
from .profile import profiled, summarise_wrapped, wrap
from .server import OPERATOR_TOKEN, Server, cli_command, run_measured, serve, service_env

USAGE = "/api/v1/billing/usage"
ANALYTICS = "/api/v1/billing/usage-analytics"
DEEP_PAGES = (1, 10, 100, 1000)
PAGE_LIMIT = 500
RANDOM_PAGE_LIMIT = 200
PROFILE: Path | None = None  # set by --profile: py-spy profiles of each phase go there


@dataclass
class Budget:
    """Samples and durations: the default run and --quick differ only here."""
    page_samples: int = 40
    ceiling_samples: int = 20
    naive_page_samples: int = 3
    throughput_seconds: float = 20.0
    healthz_seconds: float = 10.0
    max_requests: int = 200_000
    clients: int = 16
    analytics_samples: int = 40
    naive_analytics_samples: int = 5
    ingest_clients: int = 4
    ingest_per_request: int = 1000
    raw_per_tx: int = 10_000
    command_timeout: float = 1200.0

    @classmethod
    def quick(cls) -> "Budget":
        return cls(page_samples=5, ceiling_samples=5, naive_page_samples=2, throughput_seconds=2.0,
                   healthz_seconds=2.0, max_requests=20_000, analytics_samples=5, naive_analytics_samples=2)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- the engine's ceiling: the statements the store issues, replayed through the driver ---------------------------

class StatementRecorder:
    """Records the SQL a SqlStore call sends (SQLAlchemy's before_cursor_execute), to replay it through the driver."""

    def __init__(self, store: SqlStore) -> None:
        self.statements: list[tuple[str, tuple]] = []
        self._on = False
        sa.event.listen(store.engine, "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if self._on and statement.lstrip().upper().startswith("SELECT"):
            self.statements.append((statement, tuple(parameters or ())))

    @contextmanager
    def recording(self) -> Iterator[list[tuple[str, tuple]]]:
        self.statements = []
        self._on = True
        try:
            yield self.statements
        finally:
            self._on = False


def replay(c: Any, statements: list[tuple[str, tuple]], begin: str = "BEGIN") -> Callable[[], None]:
    """The statements as the driver received them from the store, in a read transaction opened as the store opens
    its own (`begin`: REPEATABLE READ on PostgreSQL)."""
    def run() -> None:
        c.execute(begin)
        try:
            for statement, params in statements:
                c.execute(statement, params).fetchall()
        finally:
            c.execute("COMMIT")
    return run


# -- deep pages ---------------------------------------------------------------------------------------------------

@dataclass
class Variant:
    name: str
    params: dict[str, str]
    currency: int | None
    start: int | None
    end: int | None  # exclusive, as the API turns an inclusive endDate into a filter

    def usage_filter(self, uid: int) -> UsageFilter:
        return UsageFilter(uid, self.currency, self.start, self.end)


def variants(engine: Engine, c: Any, uid: int, first_day: int, days: int) -> list[Variant]:
    """No filter; the heavy user's most used currency; a date range over most of the year."""
    top = c.execute(engine.sql("SELECT currency, SUM(n) AS rows FROM rollup_daily WHERE uid = ? GROUP BY currency "
                               "ORDER BY rows DESC LIMIT 1"), (uid,)).fetchone()[0]
    d0 = date(1970, 1, 1) + timedelta(days=first_day + days // 6)
    d1 = date(1970, 1, 1) + timedelta(days=first_day + days - days // 12)
    start, end = parse_instant(d0.isoformat()), parse_instant(d1.isoformat(), end_of_day=True) + 1
    return [Variant("all", {}, None, None, None),
            Variant(f"currency={CURRENCY_NAMES[top]}", {"currency": CURRENCY_NAMES[top]}, top, None, None),
            Variant(f"range={d0}..{d1}", {"startDate": d0.isoformat(), "endDate": d1.isoformat()}, None, start, end)]


def deep_pages(server: Server, engine: Engine, db: str, url: str, admin: str, uid: int, first_day: int, days: int,
               budget: Budget) -> dict[str, Any]:
    raw = engine.connect(db)
    store = SqlStore(url)
    recorder = StatementRecorder(store)
    out: dict[str, Any] = {"limit": PAGE_LIMIT, "variants": {}}
    rows_statement = engine.sql("SELECT id, ms(ts)")  # how the store's SELECT of a page's rows starts
    try:
        with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {admin}"},
                          timeout=TIMEOUT) as client:
            for v in variants(engine, raw, uid, first_day, days):
                first = check(client.get(USAGE, params={**v.params, "limit": PAGE_LIMIT}), USAGE)
                total = int(first.headers["x-pagination-total"])
                last = max(1, math.ceil(total / PAGE_LIMIT))
                entry: dict[str, Any] = {"params": v.params, "total_rows": total, "last_page": last}
                for order in ("desc", "asc"):
                    pages: dict[str, Any] = {}
                    for label, number in [*((str(p), p) for p in DEEP_PAGES), ("last", last)]:
                        if number > last:
                            pages[label] = None  # beyond the last page at this size
                            continue
                        params = {**v.params, "limit": PAGE_LIMIT, "page": number, "sortOrder": order}
                        expected = min(PAGE_LIMIT, total - (number - 1) * PAGE_LIMIT)

                        def verify(response: httpx.Response, expected=expected) -> None:
                            if response.content.count(b'"timestamp"') != expected:
                                raise RuntimeError(f"page {number} of {v.name}: expected {expected} rows")

                        samples = time_requests(client, lambda params=params: (USAGE, params), budget.page_samples,
                                                verify=verify)
                        with recorder.recording() as statements:
                            store.usage_page(v.usage_filter(uid), descending=order == "desc",
                                             offset=(number - 1) * PAGE_LIMIT, limit=PAGE_LIMIT)
                        row_select = [s for s in statements if s[0].lstrip().startswith(rows_statement)]
                        if len(row_select) != 1:
                            raise RuntimeError(f"page {number} of {v.name}: expected the store's one SELECT of the "
                                               f"rows among {len(statements)} statements, found {len(row_select)}")
                        engine_all = time_calls(replay(raw, statements, engine.begin_read), budget.ceiling_samples)
                        engine_select = time_calls(replay(raw, row_select, engine.begin_read),
                                                   budget.ceiling_samples)
                        pages[label] = {"page": number, **summary_ms(samples),
                                        "engine_select_p50_ms": _ms(percentile(engine_select, 50)),
                                        "engine_all_statements_p50_ms": _ms(percentile(engine_all, 50)),
                                        "statements": len(statements)}
                        log(f"  deep page {v.name} {order} page {number}: p50 {pages[label]['p50_ms']} ms, "
                            f"p99 {pages[label]['p99_ms']} ms (engine select {pages[label]['engine_select_p50_ms']} ms)")
                    ratio = pages["last"]["p50_ms"] / pages["1"]["p50_ms"]
                    ratio99 = pages["last"]["p99_ms"] / pages["1"]["p99_ms"]
                    naive_pages = {}
                    for label, number in (("1", 1), ("1000", 1000), ("last", last)):
                        if number > last:
                            naive_pages[label] = None
                            continue
                        samples = time_calls(lambda number=number: naive.page(
                            engine, raw, uid, currency=v.currency, start=v.start, end=v.end,
                            descending=order == "desc", page_number=number, limit=PAGE_LIMIT),
                            budget.naive_page_samples, warmup=0)
                        naive_pages[label] = {"page": number, **summary_ms(samples)}
                    naive_ratio = naive_pages["last"]["p50_ms"] / naive_pages["1"]["p50_ms"]
                    entry[order] = {"pages": pages, "ratio_last_to_first_p50": round(ratio, 3),
                                    "ratio_last_to_first_p99": round(ratio99, 3),
                                    "naive": {"pages": naive_pages, "ratio_last_to_first_p50": round(naive_ratio, 3)}}
                    log(f"  deep pages {v.name} {order}: last/first {ratio:.2f} (naive peer {naive_ratio:.1f}, "
                        f"its last page {naive_pages['last']['p50_ms']:.0f} ms)")
                out["variants"][v.name] = entry
    finally:
        raw.close()
        store.close()
    ratios = [e[o]["ratio_last_to_first_p50"] for e in out["variants"].values() for o in ("desc", "asc")]
    naive_ratios = [e[o]["naive"]["ratio_last_to_first_p50"] for e in out["variants"].values() for o in ("desc", "asc")]
    out["worst_ratio_last_to_first_p50"] = max(ratios)
    out["worst_naive_ratio_last_to_first_p50"] = max(naive_ratios)
    return out


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


# -- usage throughput ---------------------------------------------------------------------------------------------

def usage_throughput(server: Server, admin: str, total: int, budget: Budget) -> dict[str, Any]:
    last = max(1, math.ceil(total / RANDOM_PAGE_LIMIT))

    def random_page(rng: random.Random) -> tuple[str, dict, int]:
        page = rng.randint(1, last)
        order = rng.choice(("asc", "desc"))
        rows = min(RANDOM_PAGE_LIMIT, total - (page - 1) * RANDOM_PAGE_LIMIT)
        return USAGE, {"limit": RANDOM_PAGE_LIMIT, "page": page, "sortOrder": order}, rows

    cpu0 = server.cpu()
    with profiled(server.pid, PROFILE, "usage-throughput"):
        usage = throughput(server.base_url, {"Authorization": f"Bearer {admin}"}, random_page, clients=budget.clients,
                           duration=budget.throughput_seconds, max_requests=budget.max_requests, seed=5)
    usage_cpu = server.cpu() - cpu0
    log(f"  random pages: {usage.requests / usage.seconds:.0f} req/s, {usage.rows / usage.seconds:.0f} rows/s")
    cpu0 = server.cpu()
    with profiled(server.pid, PROFILE, "healthz"):
        health = throughput(server.base_url, {}, lambda rng: ("/healthz", {}, 0), clients=budget.clients,
                            duration=budget.healthz_seconds, max_requests=budget.max_requests, seed=6)
    health_cpu = server.cpu() - cpu0
    log(f"  /healthz: {health.requests / health.seconds:.0f} req/s")
    return {"usage_random_pages": {**usage.as_json(), "limit": RANDOM_PAGE_LIMIT, "pages": last,
                                   "server_cpu_seconds": round(usage_cpu, 2)},
            "healthz": {**health.as_json(), "server_cpu_seconds": round(health_cpu, 2)}}


# -- analytics ----------------------------------------------------------------------------------------------------

def analytics(server: Server, engine: Engine, db: str, admin: str, uid: int, budget: Budget) -> dict[str, Any]:
    out: dict[str, Any] = {}
    raw = engine.connect(db)
    try:
        with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {admin}"},
                          timeout=TIMEOUT) as client:
            for lookback in ("7d", "90d"):
                samples = time_requests(client, lambda: (ANALYTICS, {"lookback": lookback}), budget.analytics_samples)
                body = client.get(ANALYTICS, params={"lookback": lookback}).json()
                days = resolve_range(lookback, None, None, "UTC", now_ms())
                naive_samples = time_calls(lambda: naive.analytics(engine, raw, uid, days.bounds[0],
                                                                   days.bounds[-1]),
                                           budget.naive_analytics_samples, warmup=0)
                rows = raw.execute(engine.sql("SELECT COUNT(*) FROM usage_rows WHERE uid = ? AND ts >= @ts "
                                              "AND ts < @ts"), (uid, days.bounds[0], days.bounds[-1])).fetchone()[0]
                out[lookback] = {**summary_ms(samples), "rows_in_range": rows, "models": len(body["byModel"]),
                                 "keys": len(body["byKey"]),
                                 "naive": summary_ms(naive_samples)}
                log(f"  analytics {lookback}: p50 {out[lookback]['p50_ms']} ms over {rows} rows "
                    f"(naive GROUP BY {out[lookback]['naive']['p50_ms']:.0f} ms)")
    finally:
        raw.close()
    return out


# -- export -------------------------------------------------------------------------------------------------------

def export_http(url: str, admin: str, work: Path, budget: Budget) -> dict[str, Any]:
    """The heavy user's whole history as CSV through /usage-history, on a server started for this walk alone."""
    with serve(url, work / "server-export.log") as server, \
            httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {admin}"},
                         timeout=TIMEOUT) as client:
        check(client.get("/api/v1/billing/balance"), "balance")
        before = server.rss()
        rss_samples: list[int] = []

        def on_page(n: int) -> None:
            if n % 50 == 0:
                rss_samples.append(server.rss()["VmRSS"])

        with profiled(server.pid, PROFILE, "export-http"):
            seconds, rows, size = walk_history(client, {"pageSize": 1000}, on_page)
        after = server.rss()
    out = {"rows": rows, "bytes": size, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 1),
           "page_size": 1000, "server_rss_before_mb": _mb(before["VmRSS"]),
           "server_rss_during_max_mb": _mb(max(rss_samples or [after["VmRSS"]])),
           "server_rss_after_mb": _mb(after["VmRSS"]), "server_peak_rss_mb": _mb(after["VmHWM"])}
    log(f"  export via usage-history: {out['rows_per_s']:.0f} rows/s, server peak RSS {out['server_peak_rss_mb']} MB")
    return out


def export_cli(url: str, user_id: str, work: Path, budget: Budget) -> dict[str, Any]:
    target = work / "export.csv"
    target.unlink(missing_ok=True)
    wall, code, rss = run_measured(wrap([*cli_command(), "export", "--user", user_id, "-o", str(target)],
                                        PROFILE, "export-cli"),
                                   service_env(url), work / "cli-export.log", budget.command_timeout)
    summarise_wrapped(PROFILE, "export-cli")
    if code != 0 and not (PROFILE and target.exists()):  # py-spy itself exits 1 ("No child process") at the end
        raise RuntimeError(f"usage-ledger export exited with {code}; see {work / 'cli-export.log'}")
    with target.open("rb") as f:
        rows = sum(1 for _ in f) - 1
    out = {"rows": rows, "bytes": target.stat().st_size, "seconds": round(wall, 3),
           "rows_per_s": round(rows / wall, 1), "peak_rss_mb": _mb(rss)}
    target.unlink()
    log(f"  export via usage-ledger export: {out['rows_per_s']:.0f} rows/s")
    return out


def _mb(n: int) -> float:
    return round(n / 2**20, 1)


# -- ingest -------------------------------------------------------------------------------------------------------

def ingest(engine: Engine, template: str, records: list[dict[str, Any]], work: Path, budget: Budget) -> dict[str, Any]:
    """The same records through POST /ledger/records and `usage-ledger ingest`, each into a fresh copy of the
    template, then the rows the HTTP run stored INSERTed raw into a third copy."""
    out: dict[str, Any] = {"records": len(records)}
    n = budget.ingest_per_request
    bodies = [dumps({"records": records[i:i + n]}) for i in range(0, len(records), n)]

    engine.copy(template, "ingest_http")
    with serve(engine.url("ingest_http"), work / "server-ingest.log") as server:
        cpu0 = server.cpu()
        with profiled(server.pid, PROFILE, "ingest-http"):
            seconds, recorded, _ = post_all(server.base_url, {"Authorization": f"Bearer {OPERATOR_TOKEN}",
                                                              "Content-Type": "application/json"},
                                            "/api/v1/ledger/records", bodies, clients=budget.ingest_clients,
                                            deadline_s=budget.command_timeout)
        cpu = server.cpu() - cpu0
    if recorded != len(records):
        raise RuntimeError(f"POST /ledger/records recorded {recorded} of {len(records)} records")
    rows = _count_rows(engine, "ingest_http")
    out["http"] = {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 1),
                   "records_per_s": round(recorded / seconds, 1), "clients": budget.ingest_clients,
                   "records_per_request": n, "server_cpu_seconds": round(cpu, 2)}
    log(f"  ingest via POST /ledger/records: {out['http']['rows_per_s']:.0f} rows/s")

    engine.copy(template, "ingest_cli")
    jsonl = work / "ingest.jsonl"
    with jsonl.open("wb") as f:
        for record in records:
            f.write(dumps(record) + b"\n")
    empty = work / "empty.jsonl"
    empty.write_bytes(b"")
    env = service_env(engine.url("ingest_cli"))
    startup, code, _ = run_measured([*cli_command(), "ingest", str(empty)], env, work / "cli-ingest.log", 120)
    wall, code2, _ = run_measured(wrap([*cli_command(), "ingest", str(jsonl), "--batch", str(n)], PROFILE,
                                       "ingest-cli"), env,
                                  work / "cli-ingest.log", budget.command_timeout)
    if code or (code2 and not PROFILE):  # py-spy itself exits 1 ("No child process") at the end; rows are checked
        raise RuntimeError(f"usage-ledger ingest exited with {code or code2}; see {work / 'cli-ingest.log'}")
    summarise_wrapped(PROFILE, "ingest-cli")
    cli_rows = _count_rows(engine, "ingest_cli")
    if cli_rows != rows:
        raise RuntimeError(f"usage-ledger ingest stored {cli_rows} rows, POST /ledger/records {rows}")
    out["cli"] = {"rows": cli_rows, "seconds": round(wall, 3), "rows_per_s": round(cli_rows / wall, 1),
                  "startup_seconds": round(startup, 3),
                  "rows_per_s_after_startup": round(cli_rows / max(1e-9, wall - startup), 1), "batch": n}
    log(f"  ingest via usage-ledger ingest: {out['cli']['rows_per_s']:.0f} rows/s")

    stored = fetch_rows(engine, "ingest_http")
    engine.copy(template, "ingest_raw")
    raw_seconds = engine.raw_insert("ingest_raw", stored, budget.raw_per_tx)
    out["raw_insert"] = {"rows": len(stored), "seconds": round(raw_seconds, 3),
                         "rows_per_s": round(len(stored) / raw_seconds, 1), "rows_per_tx": budget.raw_per_tx,
                         "what": "INSERT into usage_rows (same table, same indexes), no idempotency keys, "
                                 "balances or rollups, through the driver's executemany"}
    out["http_share_of_raw"] = round(out["http"]["rows_per_s"] / out["raw_insert"]["rows_per_s"], 4)
    log(f"  raw INSERT: {out['raw_insert']['rows_per_s']:.0f} rows/s (HTTP is {out['http_share_of_raw']:.1%})")
    for name in ("ingest_http", "ingest_cli", "ingest_raw"):
        engine.remove(name)
    jsonl.unlink()
    return out


def _count_rows(engine: Engine, db: str) -> int:
    c = engine.connect(db)
    try:
        return c.execute("SELECT COUNT(*) FROM usage_rows").fetchone()[0]
    finally:
        c.close()


# -- the loaded data ----------------------------------------------------------------------------------------------

def data_profile(engine: Engine, db: str, heavy: BenchUser) -> dict[str, Any]:
    """What was loaded, and whether the ledger's derived state agrees with its rows. The statements are in the store's
    notation (Engine.sql); sums are read back as Python ints (PostgreSQL's SUM of a bigint is a numeric)."""
    c = engine.connect(db)

    def one(statement: str, params: tuple = ()) -> Any:
        return c.execute(engine.sql(statement), params).fetchone()

    def pairs(statement: str, params: tuple = ()) -> dict:
        return {tuple(r[:-1]) if len(r) > 2 else r[0]: int(r[-1])
                for r in c.execute(engine.sql(statement), params).fetchall()}

    try:
        uid = one("SELECT uid FROM users WHERE user_id = ?", (heavy.user_id,))[0]
        rows = one("SELECT COUNT(*) FROM usage_rows")[0]
        by_currency = pairs("SELECT currency, SUM(n) FROM rollup_daily GROUP BY currency")
        heavy_by_currency = pairs("SELECT currency, SUM(n) FROM rollup_daily WHERE uid = ? GROUP BY currency", (uid,))
        heavy_rows = sum(heavy_by_currency.values())
        hourly = int(one("SELECT COALESCE(SUM(n), 0) FROM rollup_hourly")[0])
        daily = sum(by_currency.values())
        balances = pairs("SELECT uid, currency, amount FROM balances")
        sums = pairs("SELECT uid, currency, SUM(amount) FROM usage_rows GROUP BY uid, currency")
        shared = [int(x) for x in one(
            "SELECT COALESCE(SUM(CASE WHEN n > 1 THEN 1 ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN e > 1 THEN 1 ELSE 0 END), 0) FROM (SELECT COUNT(*) AS n, "
            "COUNT(DISTINCT request_id) AS e FROM usage_rows WHERE uid = ? GROUP BY ts) AS by_ms", (uid,))]
        late = one("SELECT COUNT(*) FROM (SELECT ms(ts) AS ts, MAX(ms(ts)) OVER (ORDER BY id ROWS BETWEEN UNBOUNDED "
                   "PRECEDING AND 1 PRECEDING) AS newest FROM usage_rows WHERE uid = ?) AS arrivals "
                   f"WHERE ts < newest - {MS_PER_DAY}", (uid,))[0]
        keys = one("SELECT COUNT(*) FROM api_keys")[0]
        users = one("SELECT COUNT(*) FROM users")[0]
        skus = one("SELECT COUNT(DISTINCT sku) FROM rollup_sku_daily")[0]
        heavy_skus = one("SELECT COUNT(DISTINCT sku) FROM rollup_sku_daily WHERE uid = ?", (uid,))[0]
    finally:
        c.close()
    return {
        "users": users, "api_keys": keys, "rows": rows, "heavy_user": heavy.user_id, "heavy_uid": uid,
        "heavy_rows": heavy_rows, "heavy_keys": len(heavy.keys),
        "rows_by_currency": {CURRENCY_NAMES[k]: v for k, v in sorted(by_currency.items())},
        "heavy_rows_by_currency": {CURRENCY_NAMES[k]: v for k, v in sorted(heavy_by_currency.items())},
        "skus": skus, "heavy_skus": heavy_skus,
        "heavy_ms_with_several_rows": shared[0], "heavy_ms_with_several_events": shared[1],
        "heavy_rows_arriving_a_day_late_or_more": late,
        "consistent": {"rollup_hourly_rows": hourly == rows, "rollup_daily_rows": daily == rows,
                       "balances_equal_row_sums": balances == sums},
        "db_bytes": engine.size_bytes(db),
    }
