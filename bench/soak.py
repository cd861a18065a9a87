"""Soak: minutes of mixed, bounded load against a real `usage-ledger serve`, then the ledger's invariants (issue 6).

    .venv/bin/python -m bench.soak                      # 10 minutes on a fresh SQLite file (docs/RELIABILITY.md)
    .venv/bin/python -m bench.soak --minutes 1 --rate 30
    .venv/bin/python -m bench.soak --database-url postgresql://postgres@127.0.0.1:5432/soak   # an empty database

Not run in CI. The server runs with the production defaults (per-key rate limit, failed-auth block, analytics cache)
except for the operator token; traffic goes to 127.0.0.1 only, paced to --rate requests a second in all and stopped
after --minutes (and after rate x minutes x 1.2 requests at most, whichever comes first).

The mix, by weight: ingest batches of 100 records (events and priced rows, several users), /billing/usage pages (JSON
and CSV, random page, limit, order, currency), /billing/usage-history walks of a few pages, /billing/usage-analytics
(random lookback and zone), /billing/balance and /api_keys. Reported: p50/p95/p99 latency by kind over the first and
the last minute and the whole run, non-2xx answers, the server's RSS at the start, the end and its peak (VmHWM),
rows stored; then, the server stopped, every balance against its rows' sum and the rollups against a rebuild.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx

from bench.server import cli_command, free_port, proc_status

TOKEN = "soak-operator-token-0123456789abcdefghijklmn"
USERS = 20
MODELS = ["zai-org-glm-5-1", "llama-3.3-70b"]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Sydney"]
WEIGHTS = {"ingest": 10, "usage": 30, "usage_csv": 8, "history": 15, "analytics": 12, "balance": 15, "api_keys": 10}


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem / 2**30, 1), "os": platform.platform(),
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version}


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Soak:
    def __init__(self, base_url: str, minutes: float, rate: float, seed: int) -> None:
        self.base_url, self.rate = base_url, rate
        self.duration = minutes * 60
        self.budget = int(rate * self.duration * 1.2) + 100  # requests, at most
        self.sent = 0
        self.lock = threading.Lock()
        self.samples: list[tuple[float, str, float, int]] = []  # (seconds since start, kind, latency, status)
        self.failures: list[str] = []
        self.keys: dict[str, str] = {}
        self.rng = random.Random(seed)
        self.batch = 0
        self.started = 0.0

    # -- set-up -------------------------------------------------------------------------------------------------

    def seed(self) -> None:
        op = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=self.base_url, timeout=60) as http:
            for i in range(USERS):
                user = f"soak-{i:02d}"
                assert http.post("/api/v1/ledger/users", json={"userId": user}, headers=op).status_code == 201
                self.keys[user] = http.post(f"/api/v1/ledger/users/{user}/api_keys", headers=op, json={
                    "apiKeyType": "ADMIN", "description": f"soak key {i}"}).json()["data"]["apiKey"]
                currency = ("DIEM", "BUNDLED_CREDITS", "USD")[i % 3]
                assert http.post("/api/v1/ledger/credits", headers=op, json={
                    "userId": user, "currency": currency, "amount": 5, "idempotencyKey": "soak-top-up"}).status_code == 200

    # -- the mix ------------------------------------------------------------------------------------------------

    def _next_batch(self, rng: random.Random) -> bytes:
        with self.lock:
            self.batch += 1
            batch = self.batch
        records = []
        for n in range(100):
            user = f"soak-{rng.randrange(USERS):02d}"
            tag = f"soak-{batch}-{n}"
            if n % 2:
                records.append({"userId": user, "model": rng.choice(MODELS), "requestId": tag,
                                "promptTokens": rng.randint(10, 20_000), "completionTokens": rng.randint(1, 4000),
                                "inferenceExecutionTime": rng.randint(50, 9000), "notes": "API Inference"})
            else:
                records.append({"userId": user, "sku": f"soak-sku-{n % 4}", "units": rng.randint(1, 1000),
                                "pricePerUnitUsd": 0.0001, "idempotencyKey": tag, "notes": "priced"})
        return json.dumps({"records": records}).encode()

    def _one(self, http: httpx.Client, rng: random.Random, kind: str) -> int:
        user = f"soak-{rng.randrange(USERS):02d}"
        auth = {"Authorization": f"Bearer {self.keys[user]}"}
        if kind == "ingest":
            return http.post("/api/v1/ledger/records", content=self._next_batch(rng), headers={
                "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}).status_code
        if kind in ("usage", "usage_csv"):
            params = {"limit": rng.choice([10, 50, 200, 500]), "page": rng.choice([1, 1, 2, 5, 20, 100]),
                      "sortOrder": rng.choice(["asc", "desc"])}
            if rng.random() < 0.3:
                params["currency"] = rng.choice(["USD", "DIEM", "BUNDLED_CREDITS"])
            headers = {**auth, "Accept": "text/csv"} if kind == "usage_csv" else auth
            return http.get("/api/v1/billing/usage", params=params, headers=headers).status_code
        if kind == "history":
            params: dict = {"pageSize": rng.choice([10, 100, 500])}
            status = 200
            for _ in range(rng.randint(1, 4)):
                r = http.get("/api/v1/billing/usage-history", params=params, headers=auth)
                status = r.status_code
                cursor = r.json().get("nextCursor") if status == 200 else None
                if not cursor:
                    break
                params = {"cursor": cursor}
            return status
        if kind == "analytics":
            params = {"lookback": f"{rng.choice([1, 7, 30, 90])}d", "timezone": rng.choice(ZONES)}
            return http.get("/api/v1/billing/usage-analytics", params=params, headers=auth).status_code
        if kind == "balance":
            return http.get("/api/v1/billing/balance", headers=auth).status_code
        return http.get("/api/v1/api_keys", headers=auth).status_code

    def worker(self, index: int, workers: int) -> None:
        rng = random.Random(index * 7919 + 1)
        kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
        interval = workers / self.rate  # each worker's share of the pace
        next_at = self.started + rng.random() * interval
        with httpx.Client(base_url=self.base_url, timeout=60) as http:
            while True:
                now = time.monotonic()
                if now - self.started >= self.duration:
                    return
                with self.lock:
                    if self.sent >= self.budget:
                        return
                    self.sent += 1
                if next_at > now:
                    time.sleep(next_at - now)
                next_at += interval
                kind = rng.choices(kinds, weights)[0]
                began = time.monotonic()
                try:
                    status = self._one(http, rng, kind)
                except httpx.HTTPError as exc:
                    status = 0
                    with self.lock:
                        self.failures.append(f"{kind}: {exc!r}")
                took = time.monotonic() - began
                with self.lock:
                    self.samples.append((began - self.started, kind, took, status))

    def run(self, workers: int, server_pid: int) -> dict:
        rss = [(0.0, proc_status(server_pid)["VmRSS"])]
        self.started = time.monotonic()
        threads = [threading.Thread(target=self.worker, args=(i, workers), daemon=True) for i in range(workers)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            time.sleep(5)
            rss.append((time.monotonic() - self.started, proc_status(server_pid)["VmRSS"]))
        for t in threads:
            t.join()
        status = proc_status(server_pid)
        rss.append((time.monotonic() - self.started, status["VmRSS"]))
        return {"rss_series": rss, "rss_peak": status["VmHWM"], "elapsed": time.monotonic() - self.started}

    # -- figures ------------------------------------------------------------------------------------------------

    def figures(self) -> dict:
        def summary(window: list[tuple]) -> dict:
            out = {}
            for kind in ["all", *WEIGHTS]:
                lat = [s[2] * 1000 for s in window if kind in ("all", s[1])]
                def ms(v):
                    return None if v is None else round(v, 1)
                out[kind] = {"n": len(lat), "p50_ms": ms(percentile(lat, 50)), "p95_ms": ms(percentile(lat, 95)),
                             "p99_ms": ms(percentile(lat, 99)), "max_ms": ms(max(lat) if lat else None)}
            return out

        end = max((s[0] for s in self.samples), default=0)
        statuses: dict[str, int] = defaultdict(int)
        for s in self.samples:
            statuses[str(s[3])] += 1
        by_minute: dict[int, list[float]] = defaultdict(list)
        for s in self.samples:
            by_minute[int(s[0] // 60)].append(s[2] * 1000)
        per_minute = [{"minute": m + 1, "n": len(v), "p50_ms": round(percentile(v, 50), 1),
                       "p99_ms": round(percentile(v, 99), 1)} for m, v in sorted(by_minute.items())]
        return {"requests": len(self.samples), "statuses": dict(statuses), "failures": self.failures[:20],
                "per_minute": per_minute,
                "first_minute": summary([s for s in self.samples if s[0] < 60]),
                "last_minute": summary([s for s in self.samples if s[0] >= end - 60]),
                "whole_run": summary(self.samples)}


def check_invariants(database_url: str) -> dict:
    """The server stopped: balances against the rows' sums, rollups against a rebuild, rows counted."""
    from usage_ledger.store.sql import SqlStore

    store = SqlStore(database_url)
    try:
        with store.engine.connect() as c:
            rows = c.exec_driver_sql("SELECT COUNT(*) FROM usage_rows").scalar_one()
            sums = c.exec_driver_sql("SELECT uid, currency, SUM(amount) FROM usage_rows GROUP BY uid, currency").fetchall()
            balances = c.exec_driver_sql("SELECT uid, currency, amount FROM balances").fetchall()
        by_rows = {(uid, cur): int(total) for uid, cur, total in sums}
        by_balance = {(uid, cur): int(amount) for uid, cur, amount in balances if amount or (uid, cur) in by_rows}
        maintained = store.rollup_contents()
        started = time.perf_counter()
        store.rebuild_rollups()
        rebuild_s = time.perf_counter() - started
        rollups_ok = store.rollup_contents() == maintained
    finally:
        store.close()
    return {"rows": rows, "balances_equal_rows": by_rows == by_balance, "rollups_equal_rebuild": rollups_ok,
            "rebuild_seconds": round(rebuild_s, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=40.0, help="requests a second in all (default 40)")
    parser.add_argument("--workers", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--database-url", help="an empty database; default: a fresh SQLite file in --workdir")
    parser.add_argument("--workdir", type=Path, help="database and server logs (default: a temporary directory, removed)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="usage-ledger-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    database_url = args.database_url or f"sqlite:///{workdir / 'soak.db'}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("USAGE_LEDGER_")}
    env.update({"USAGE_LEDGER_DATABASE_URL": database_url, "USAGE_LEDGER_OPERATOR_TOKEN": TOKEN})
    out_log, err_log = (workdir / "server.stdout").open("wb"), (workdir / "server.stderr").open("wb")
    server = subprocess.Popen([*cli_command(), "serve", "--port", str(port)], env=env, cwd=workdir, stdout=out_log,
                              stderr=err_log)
    result: dict = {"machine": machine(), "engine": database_url.split(":", 1)[0], "minutes": args.minutes,
                    "rate_per_s": args.rate, "workers": args.workers}
    try:
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start: {(workdir / 'server.stderr').read_text()[-2000:]}")
            time.sleep(0.2)
        soak = Soak(base_url, args.minutes, args.rate, args.seed)
        soak.seed()
        print(f"soaking {args.minutes:g} min at {args.rate:g} req/s with {args.workers} workers "
              f"against {result['engine']} (server pid {server.pid})", file=sys.stderr)
        run = soak.run(args.workers, server.pid)
        result.update(soak.figures())
        result["rss_start_mib"] = round(run["rss_series"][0][1] / 2**20, 1)
        result["rss_end_mib"] = round(run["rss_series"][-1][1] / 2**20, 1)
        result["rss_peak_mib"] = round(run["rss_peak"] / 2**20, 1)
        result["rss_series_mib"] = [(round(t), round(r / 2**20, 1)) for t, r in run["rss_series"]]
        result["elapsed_s"] = round(run["elapsed"], 1)
        wal = Path(database_url.removeprefix("sqlite:///") + "-wal")
        if database_url.startswith("sqlite:///") and wal.exists():  # before the stop, which checkpoints it away
            result["wal_mib_at_end"] = round(wal.stat().st_size / 2**20, 1)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        out_log.close()
        err_log.close()
    result["server_log_tracebacks"] = (workdir / "server.stderr").read_text(errors="replace").count("Traceback")
    result["invariants"] = check_invariants(database_url)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    inv = result["invariants"]
    ok = inv["balances_equal_rows"] and inv["rollups_equal_rebuild"] and not result["server_log_tracebacks"] \
        and all(code.startswith("2") for code in result["statuses"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
