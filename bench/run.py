"""One command for issue 5's figures: generate, load through the ledger, measure against a real server, report.

    .venv/bin/python -m bench.run [--quick] [--engine sqlite|postgresql] [--out bench/results]

Writes <out>/<engine>-<date>.json and .md, and <out>/latest-<engine>.md (the table for the README). Every server it
starts listens on 127.0.0.1 only and is terminated on the way out; every load generator is bounded in requests and
time. No figure is asserted anywhere: the targets are checked and reported, met or missed.
"""

from __future__ import annotations

import argparse
import os
import resource
import hashlib
import json
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from usage_ledger.catalog import Catalog
from usage_ledger.store.sql import SqlStore
from usage_ledger.timeutil import MS_PER_DAY, iso_ms, now_ms

from . import measure
from .engines import DEFAULT_PREFIX, POSTGRES_URL_ENV, Engine, EngineUnavailable, make_engine
from .gen import SEED, Generator, Sizes
from .load import batches_in_child, load_batches
from .measure import Budget, log
from .report import machine, markdown, targets
from .profile import profiled
from .server import serve

HERE = Path(__file__).parent
LOAD_BATCH = 5000  # records per write transaction while loading (the issue allows 1,000 to 5,000)
LOAD_CACHE_MB = 256


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")  # guest is inside user


def _own_seconds() -> float:
    """CPU seconds of this process, its reaped descendants, and its live descendants (servers, commands)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    me = os.getpid()

    def mine(pid: int) -> bool:
        while pid > 1:
            if pid == me:
                return True
            pid = parents.get(pid, 0)
        return False

    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return sum(v for pid, v in cpu.items() if mine(pid)) + reaped.ru_utime + reaped.ru_stime


class Machine:
    """What else ran on the machine during each phase: the CPU seconds of processes outside this run (other test
    suites on a shared 2-core box move every figure), measured as the machine's busy time minus this run's own.
    A database server's processes (PostgreSQL's, on this machine) are not this run's descendants: their CPU
    seconds count as the run's own, and are reported beside."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.phases: dict[str, dict[str, float]] = {}

    def phase(self, name: str):
        @contextmanager
        def around():
            busy, own, server = _busy_seconds(), _own_seconds(), self.engine.server_cpu_seconds()
            began = time.perf_counter()
            yield
            wall = time.perf_counter() - began
            server = self.engine.server_cpu_seconds() - server
            others = max(0.0, (_busy_seconds() - busy) - (_own_seconds() - own) - server)
            self.phases[name] = {"seconds": round(wall, 1), "other_processes_cpu_seconds": round(others, 1),
                                 "other_processes_share_of_machine": round(others / (wall * (os.cpu_count() or 1)), 3)}
            if server:
                self.phases[name]["database_server_cpu_seconds"] = round(server, 1)
            if others / wall > 0.2:
                log(f"  note: other processes used {others:.0f} CPU seconds during {name} ({wall:.0f} s)")
        return around()


def _revision() -> str:
    """The commit measured, and whether the product's files differ from it (read-only git)."""
    import subprocess
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "usage_ledger", "pyproject.toml"],
                               cwd=HERE.parent, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" with uncommitted changes to usage_ledger/" if dirty else "") if head else "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a small smoke size (seconds, not minutes)")
    p.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--database-url", help="PostgreSQL: the server to create the benchmark databases on (default "
                                          f"${POSTGRES_URL_ENV}, else postgresql://postgres@127.0.0.1:5432/postgres)")
    p.add_argument("--database-prefix", default=DEFAULT_PREFIX,
                   help="PostgreSQL: the benchmark's databases are <prefix>_template, <prefix>_main, ... "
                        f"(default {DEFAULT_PREFIX})")
    p.add_argument("--out", type=Path, default=HERE / "results", help="where the results go")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the databases go (default: bench/work/<engine>[-quick], removed afterwards)")
    p.add_argument("--keep-data", action="store_true", help="keep the loaded database for a later --reuse-data")
    p.add_argument("--reuse-data", action="store_true",
                   help="reuse the workdir's loaded database when it was built from the same sizes, seed and day")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--anchor", help="the day the data ends (YYYY-MM-DD, UTC); default today, so that analytics "
                                    "lookbacks see the data")
    p.add_argument("--load-batch", type=int, default=LOAD_BATCH, help="records per write transaction while loading")
    p.add_argument("--profile", type=Path, default=None,
                   help="write py-spy profiles of each phase here (disturbs the figures: for finding hot spots)")
    p.add_argument("--only", help="comma-separated phases to run: ingest,pages,throughput,analytics,export")
    return p.parse_args(argv)


def _anchor(text: str | None) -> int:
    if text is None:
        return now_ms() // MS_PER_DAY * MS_PER_DAY
    day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    return int(day.timestamp()) * 1000


def _fingerprint(sizes: Sizes, seed: int, anchor: int, batch: int) -> str:
    code = b"".join((HERE / name).read_bytes() for name in ("gen.py", "load.py"))
    text = json.dumps([asdict(sizes), seed, anchor, batch, hashlib.sha256(code).hexdigest()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cache_pages(store: SqlStore, megabytes: int) -> None:
    """SQLite: the loader's own connection keeps a larger page cache than SQLite's 2 MB default (the indexes of a
    10M-row ledger do not fit in it); the service is measured with the product's settings untouched. (PostgreSQL's
    cache is the server's shared_buffers: nothing to set per connection.)"""
    @sa.event.listens_for(store.engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.execute(f"PRAGMA cache_size=-{megabytes * 1024}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes()
    budget = Budget.quick() if args.quick else Budget()
    workdir = args.workdir or HERE / "work" / (args.engine + ("-quick" if args.quick else ""))
    try:
        engine = make_engine(args.engine, workdir, args.database_url, args.database_prefix)
        version = engine.version()
    except (NotImplementedError, ValueError, EngineUnavailable) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    workdir.mkdir(parents=True, exist_ok=True)
    measure.PROFILE = args.profile
    phases = set((args.only or "ingest,pages,throughput,analytics,export").split(","))
    began = time.perf_counter()
    now = now_ms()
    anchor = _anchor(args.anchor)
    catalog = Catalog.load()
    command = "python -m bench.run" + (" --quick" if args.quick else "") + f" --engine {args.engine}"
    log(f"bench {command}: {sizes}, data ends {iso_ms(anchor)[:10]}, work in {workdir}")

    gen = Generator(sizes, catalog, anchor, args.seed)
    heavy = gen.heavy
    admin = heavy.admin_key.secret
    result: dict = {"command": command, "engine": engine.name, "engine_version": version,
                    "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "revision": _revision(),
                    "machine": machine(),
                    "sizes": {**asdict(sizes), "seed": args.seed, "anchor": iso_ms(anchor)[:10]},
                    "budget": asdict(budget)}
    result["machine"]["engine"] = version
    fingerprint = _fingerprint(sizes, args.seed, anchor, args.load_batch)
    stamp = workdir / "main.fingerprint"
    try:
        if args.reuse_data and engine.exists("main") and stamp.exists() and stamp.read_text().split()[0] == fingerprint:
            log("reusing the loaded database (same sizes, seed, day and generator)")
            result["load"] = json.loads(stamp.read_text().split(None, 1)[1])
            result["load_reused"] = True
            need_template = "ingest" in phases and not engine.exists("template")
        else:
            need_template = True
            stamp.unlink(missing_ok=True)
        if need_template:
            t = time.perf_counter()
            engine.remove("template")
            engine.build_template("template", gen.users, now)
            log(f"template: {len(gen.users)} users, {sum(len(u.keys) for u in gen.users)} keys "
                f"in {time.perf_counter() - t:.1f} s")

        figures: dict = {}
        box = Machine(engine)
        result["other_processes"] = box.phases
        if "ingest" in phases:
            log("ingest: the same records over HTTP, through the CLI, and raw into the engine")
            with box.phase("ingest"):
                figures["ingest"] = measure.ingest(engine, "template", gen.ingest_records(), workdir, budget)

        needs_data = bool(phases - {"ingest"})  # the ingest phase works on fresh copies of the template only
        if needs_data and "load" not in result:
            log(f"loading {sizes.total_rows:,} rows through ledger.record, {args.load_batch} records a transaction")
            engine.copy("template", "main")
            store = SqlStore(engine.url("main"))
            if engine.name == "sqlite":
                _cache_pages(store, LOAD_CACHE_MB)
            t0 = time.perf_counter()

            def progress(stats) -> None:
                log(f"  loaded {stats.records:,} records in {stats.seconds:.0f} s "
                    f"({stats.records / stats.seconds:,.0f} records/s)")

            try:
                with box.phase("load"):
                    stats = load_batches(store, catalog, batches_in_child(gen.records, args.load_batch), now,
                                         progress)
            finally:
                store.close()
            if stats.refused:
                raise RuntimeError(f"{stats.refused} records refused while loading; first: {stats.first_error}")
            engine.checkpoint("main")
            seconds = time.perf_counter() - t0
            c = engine.connect("main")
            rows = c.execute("SELECT COUNT(*) FROM usage_rows").fetchone()[0]
            c.close()
            result["load"] = {"records": stats.records, "rows": rows, "batches": stats.batches,
                              "records_per_tx": args.load_batch, "seconds": round(seconds, 1),
                              "rows_per_s": round(rows / seconds, 1)}
            if engine.name == "sqlite":
                result["load"]["loader_page_cache_mb"] = LOAD_CACHE_MB
            stamp.write_text(fingerprint + " " + json.dumps(result["load"]))
            log(f"loaded {rows:,} rows in {seconds:.0f} s ({rows / seconds:,.0f} rows/s)")

        if needs_data:
            result["data"] = data = measure.data_profile(engine, "main", heavy)
            log(f"data: {data['rows']:,} rows, heavy user {data['heavy_rows']:,}; consistent: {data['consistent']}")
            uid = data["heavy_uid"]
            url = engine.url("main")
            if phases & {"pages", "throughput", "analytics"}:
                with serve(url, workdir / "server-main.log") as server:
                    log(f"server pid {server.pid} on {server.base_url}")
                    if "pages" in phases:
                        log("deep pages")
                        with profiled(server.pid, args.profile, "deep-pages"), box.phase("deep_page"):
                            figures["deep_page"] = measure.deep_pages(server, engine, "main", url, admin, uid,
                                                                      gen.first_day, sizes.days, budget)
                    if "throughput" in phases:
                        log("throughput")
                        with box.phase("throughput"):
                            figures["throughput"] = measure.usage_throughput(server, admin, data["heavy_rows"], budget)
                    if "analytics" in phases:
                        log("analytics")
                        with profiled(server.pid, args.profile, "analytics"), box.phase("analytics"):
                            figures["analytics"] = measure.analytics(server, engine, "main", admin, uid, budget)
                    result["server_main_peak_rss_mb"] = round(server.rss()["VmHWM"] / 2**20, 1)
        if "export" in phases:
            log("export")
            with box.phase("export"):
                figures["export"] = {"http": measure.export_http(url, admin, workdir, budget),
                                     "cli": measure.export_cli(url, heavy.user_id, workdir, budget)}
        if args.profile:
            result["profiled"] = str(args.profile)  # sampled: the figures are disturbed
        result["figures"] = figures
        result["seconds"] = round(time.perf_counter() - began, 1)
        complete = {"ingest", "deep_page", "throughput", "analytics", "export"} <= set(figures)
        if complete:
            result["targets"] = targets(figures)
        write_results(result, args.out, engine.name, complete)
        log(f"done in {result['seconds']:.0f} s")
        return 0
    finally:
        if not args.keep_data:
            try:
                engine.remove_all()  # PostgreSQL: the run's databases on the server (SQLite's are in workdir)
            except Exception as exc:  # never hide the run's own error behind a cleanup failure
                log(f"could not remove the benchmark's databases: {exc}")
            shutil.rmtree(workdir, ignore_errors=True)


def write_results(result: dict, out: Path, engine: str, complete: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    day = result["date"][:10]
    name = f"{engine}-{day}" + ("-quick" if "--quick" in result["command"] else "") + \
        ("-profiled" if "profiled" in result else "")
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    if not complete:
        log(f"wrote {out / name}.json (some phases skipped: no table)")
        return
    table = markdown(result)
    (out / f"{name}.md").write_text(f"# usage-ledger benchmark: {engine}, {result['date']}\n\n{table}")
    if "--quick" not in result["command"] and "profiled" not in result:
        (out / f"latest-{engine}.md").write_text(table)
    for t in result["targets"]:
        log(f"  {'met   ' if t['met'] else 'MISSED'} {t['figure']}: {t['value']} (target {t['target']}) {t['miss']}")
    log(f"wrote {out / name}.json and .md")


if __name__ == "__main__":
    sys.exit(main())
