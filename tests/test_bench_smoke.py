"""The benchmark's quick size end to end (python -m bench.run --quick), so that bench/ cannot rot: on SQLite, and on
PostgreSQL when a server answers at USAGE_LEDGER_TEST_POSTGRES_URL (skipped, saying why, when none does).

It starts real `usage-ledger serve` processes on 127.0.0.1 and runs for well under a minute per engine. Only the
shape of the results is checked: every figure of issue 5 is present. No timing is ever asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from pgutil import ADMIN_URL

ROOT = Path(__file__).resolve().parent.parent
PAGES = ("1", "10", "100", "1000", "last")


def run_quick(tmp_path, *options: str) -> dict:
    """python -m bench.run --quick with `options`: the results JSON it wrote (its Markdown table checked too)."""
    out, work = tmp_path / "results", tmp_path / "work"
    done = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--out", str(out), "--workdir", str(work),
                           *options], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [result_file] = out.glob("*-quick.json")
    result = json.loads(result_file.read_text())
    assert result_file.name.startswith(f"{result['engine']}-")
    table = (out / result_file.name.replace(".json", ".md")).read_text()
    assert table.startswith(f"# usage-ledger benchmark: {result['engine']}, ")
    assert result["engine_version"] in table
    assert not work.exists()  # the work directory is removed afterwards
    return result


def test_quick_benchmark_writes_every_figure(tmp_path):
    result = run_quick(tmp_path)
    assert result["engine"] == "sqlite" and result["engine_version"].startswith("SQLite ")
    check_every_figure(result)


def _bench_databases(prefix: str) -> list[str]:
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
        return [name for (name,) in conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                                                 (prefix + "_",))]


def test_quick_benchmark_on_postgresql_writes_every_figure(tmp_path):
    try:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL benchmark skipped: no server at {ADMIN_URL} "
                    f"({str(exc).strip().splitlines()[0]}); set USAGE_LEDGER_TEST_POSTGRES_URL")
    # Databases of this run alone (<prefix>_template, <prefix>_main, ...), so that parallel runs never collide.
    prefix = f"ulbench_t{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        result = run_quick(tmp_path, "--engine", "postgresql", "--database-url", ADMIN_URL,
                           "--database-prefix", prefix)
        assert _bench_databases(prefix) == []  # the benchmark drops its databases afterwards
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            for name in _bench_databases(prefix):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert result["engine"] == "postgresql" and result["engine_version"].startswith("PostgreSQL ")
    check_every_figure(result)


def check_every_figure(result: dict) -> None:
    for name in ("cpu", "cores", "ram_gib", "python", "engine"):
        assert result["machine"][name], name
    assert {"users", "heavy_rows", "total_rows", "days", "seed", "anchor"} <= set(result["sizes"])
    data = result["data"]
    assert data["rows"] > 0 and data["heavy_rows"] > 0
    assert set(data["heavy_rows_by_currency"]) == {"USD", "DIEM", "BUNDLED_CREDITS", "VCU"}
    assert all(data["consistent"].values()), data["consistent"]
    assert data["heavy_ms_with_several_events"] > 0 and data["heavy_rows_arriving_a_day_late_or_more"] > 0

    f = result["figures"]
    deep = f["deep_page"]
    assert len(deep["variants"]) == 3  # no filter, a currency, a date range
    for variant in deep["variants"].values():
        for order in ("desc", "asc"):
            entry = variant[order]
            assert set(entry["pages"]) == set(PAGES)
            for page in ("1", "last"):
                measured = entry["pages"][page]
                for key in ("p50_ms", "p99_ms", "engine_select_p50_ms", "engine_all_statements_p50_ms"):
                    assert measured[key] >= 0, (page, key)
            assert entry["ratio_last_to_first_p50"] > 0
            assert entry["naive"]["ratio_last_to_first_p50"] > 0
    assert deep["worst_ratio_last_to_first_p50"] > 0

    for name in ("usage_random_pages", "healthz"):
        t = f["throughput"][name]
        assert t["requests"] > 0 and t["requests_per_s"] > 0 and t["clients"] == 16
    assert f["throughput"]["usage_random_pages"]["rows_per_s"] > 0

    ingest = f["ingest"]
    for name in ("http", "cli", "raw_insert"):
        assert ingest[name]["rows"] > 0 and ingest[name]["rows_per_s"] > 0, name
    assert ingest["http"]["rows"] == ingest["raw_insert"]["rows"]
    assert ingest["http"]["clients"] == 4 and ingest["http"]["records_per_request"] == 1000
    assert ingest["raw_insert"]["rows_per_tx"] == 10_000
    assert 0 < ingest["http_share_of_raw"]

    export = f["export"]
    assert export["http"]["rows"] == export["cli"]["rows"] == data["heavy_rows"]
    assert export["http"]["rows_per_s"] > 0 and export["cli"]["rows_per_s"] > 0
    assert export["http"]["server_peak_rss_mb"] > 0

    for lookback in ("7d", "90d"):
        a = f["analytics"][lookback]
        assert a["p50_ms"] > 0 and a["p99_ms"] > 0 and a["naive"]["p50_ms"] > 0

    assert len(result["targets"]) == 6
    for target in result["targets"]:
        assert {"figure", "target", "value", "met", "miss"} <= set(target)
