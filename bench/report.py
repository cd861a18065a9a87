"""Results: the machine, the targets checked against the figures, and the Markdown table for the README."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    ram = None
    try:
        with open("/proc/meminfo") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal"))
        ram = round(kb / 2**20, 1)
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": ram, "os": platform.platform(),
            "python": sys.version.split()[0]}


def targets(f: dict[str, Any]) -> list[dict[str, Any]]:
    """Each of the issue's targets: the figure, whether it is met, and by how much it is missed."""
    out = []
    deep = f["deep_page"]
    worst = deep["worst_ratio_last_to_first_p50"]
    out.append({"figure": "deep page: last page / page 1 (p50, worst of 3 filters x 2 orders)",
                "target": "<= 1.5", "value": worst, "met": worst <= 1.5,
                "miss": "" if worst <= 1.5 else f"{worst:.2f} vs 1.5 ({worst / 1.5 - 1:.0%} over)",
                "beside": f"naive peer worst {deep['worst_naive_ratio_last_to_first_p50']:.1f}"})
    ing = f["ingest"]
    http, raw = ing["http"]["rows_per_s"], ing["raw_insert"]["rows_per_s"]
    share = ing["http_share_of_raw"]
    out.append({"figure": "ingest: HTTP rows/s as a share of raw INSERT", "target": ">= 50%", "value": share,
                "met": share >= 0.5, "miss": "" if share >= 0.5 else f"{share:.1%} vs 50% (HTTP {http:,.0f} vs "
                                                                      f"raw {raw:,.0f} rows/s)",
                "beside": f"CLI {ing['cli']['rows_per_s']:,.0f} rows/s"})
    out.append({"figure": "ingest: HTTP rows/s", "target": ">= 30,000", "value": http, "met": http >= 30_000,
                "miss": "" if http >= 30_000 else f"{http:,.0f} vs 30,000 ({1 - http / 30_000:.0%} short)",
                "beside": ""})
    cli = f["export"]["cli"]["rows_per_s"]
    out.append({"figure": "export: usage-ledger export rows/s", "target": ">= 100,000", "value": cli,
                "met": cli >= 100_000,
                "miss": "" if cli >= 100_000 else f"{cli:,.0f} vs 100,000 ({1 - cli / 100_000:.0%} short)",
                "beside": f"usage-history {f['export']['http']['rows_per_s']:,.0f} rows/s"})
    rss = f["export"]["http"]["server_peak_rss_mb"]
    out.append({"figure": "export: server peak RSS (VmHWM) over the usage-history walk", "target": "< 200 MB",
                "value": rss, "met": rss < 200, "miss": "" if rss < 200 else f"{rss:.0f} MB vs 200 MB",
                "beside": f"RSS before {f['export']['http']['server_rss_before_mb']} MB, "
                          f"after {f['export']['http']['server_rss_after_mb']} MB"})
    a90 = f["analytics"]["90d"]["p50_ms"]
    out.append({"figure": "analytics 90d p50 (cache off)", "target": "< 50 ms", "value": a90, "met": a90 < 50,
                "miss": "" if a90 < 50 else f"{a90:.1f} ms vs 50 ms ({a90 / 50 - 1:.0%} over)",
                "beside": f"naive GROUP BY {f['analytics']['90d']['naive']['p50_ms']:.0f} ms"})
    return out


def _n(x: float | int | None, digits: int = 0) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    """The README table: every figure, its target, met or missed."""
    f, d, m = result["figures"], result["data"], result["machine"]
    lines = [
        f"Measured {result['date']} on {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Python {m['python']}, "
        f"{result['engine_version']}; revision {result.get('revision', 'unknown')}; `{result['command']}`.",
        f"Data: {d['users']:,} users, {d['api_keys']:,} API keys, {d['rows']:,} rows; heavy user {d['heavy_rows']:,} "
        f"rows over {result['sizes']['days']} days ({', '.join(f'{k} {v:,}' for k, v in d['heavy_rows_by_currency'].items())}), "
        f"{d['heavy_skus']} SKUs; {d['heavy_rows_arriving_a_day_late_or_more']:,} of its rows backfilled a day or more "
        f"late; {d['heavy_ms_with_several_events']:,} milliseconds shared by several events. "
        f"Loaded through ledger.record at {_n(result['load']['rows_per_s'])} rows/s "
        f"({_n(result['load']['seconds'])} s{', in the earlier run that generated it' if result.get('load_reused') else ''}); "
        f"this run took {_n(result.get('seconds'))} s.",
        "",
        "| figure | how | measured | target | met |",
        "|---|---|---|---|---|",
    ]
    deep = f["deep_page"]
    for name, v in deep["variants"].items():
        for order in ("desc", "asc"):
            e = v[order]
            p = e["pages"]
            cells = ", ".join(f"p{k if k != 'last' else ' last'} {p[k]['p50_ms']:.1f}/{p[k]['p99_ms']:.1f}"
                              for k in ("1", "10", "100", "1000", "last") if p.get(k))
            ratio = e["ratio_last_to_first_p50"]
            naive = e["naive"]
            lines.append(
                f"| deep page, {name}, {order} | `/billing/usage?limit=500`, p50/p99 ms by page "
                f"({v['last_page']:,} pages); engine's own SELECT of the last page "
                f"{p['last']['engine_select_p50_ms']:.1f} ms | {cells}; **last/first {ratio:.2f}**; naive peer "
                f"(count + OFFSET) {naive['pages']['1']['p50_ms']:.0f} → {naive['pages']['last']['p50_ms']:.0f} ms, "
                f"ratio {naive['ratio_last_to_first_p50']:.1f} | last ≤ 1.5× page 1 | "
                f"{'yes' if ratio <= 1.5 else f'no ({ratio:.2f}×)'} |")
    t = f["throughput"]
    u, h = t["usage_random_pages"], t["healthz"]
    lines.append(f"| usage throughput | random pages of `/billing/usage?limit=200`, {u['clients']} clients, "
                 f"{u['seconds']:.0f} s | **{_n(u['requests_per_s'])} req/s, {_n(u['rows_per_s'])} rows/s** "
                 f"(p50 {u['p50_ms']:.1f} ms, p99 {u['p99_ms']:.1f} ms) | report | — |")
    lines.append(f"| healthz throughput | `/healthz`, {h['clients']} clients, {h['seconds']:.0f} s | "
                 f"**{_n(h['requests_per_s'])} req/s** (p50 {h['p50_ms']:.1f} ms) | report | — |")
    ing = f["ingest"]
    share = ing["http_share_of_raw"]
    http = ing["http"]["rows_per_s"]
    lines.append(f"| ingest, HTTP | `POST /ledger/records`, {ing['http']['records_per_request']} records a request, "
                 f"{ing['http']['clients']} clients, {ing['http']['rows']:,} rows, fresh database | "
                 f"**{_n(http)} rows/s** | ≥ 30,000 rows/s | {'yes' if http >= 30_000 else f'no ({http / 30_000:.0%})'} |")
    lines.append(f"| ingest, CLI | `usage-ledger ingest` of the same records as JSONL | "
                 f"**{_n(ing['cli']['rows_per_s'])} rows/s** ({_n(ing['cli']['rows_per_s_after_startup'])} after "
                 f"{ing['cli']['startup_seconds']:.1f} s start-up) | report | — |")
    lines.append(f"| ingest, engine ceiling | the same rows INSERTed into usage_rows (same indexes), "
                 f"{ing['raw_insert']['rows_per_tx']:,} a transaction | **{_n(ing['raw_insert']['rows_per_s'])} "
                 f"rows/s**; HTTP is {share:.1%} of it | HTTP ≥ 50% of raw | "
                 f"{'yes' if share >= 0.5 else f'no ({share:.1%})'} |")
    ex = f["export"]
    cli = ex["cli"]["rows_per_s"]
    rss = ex["http"]["server_peak_rss_mb"]
    lines.append(f"| export, CLI | `usage-ledger export` of the heavy user's {ex['cli']['rows']:,} rows as CSV | "
                 f"**{_n(cli)} rows/s** | ≥ 100,000 rows/s | {'yes' if cli >= 100_000 else f'no ({cli / 100_000:.0%})'} |")
    lines.append(f"| export, HTTP | `/usage-history` CSV walk, pageSize 1000 | **{_n(ex['http']['rows_per_s'])} "
                 f"rows/s**; server RSS {ex['http']['server_rss_before_mb']} → {ex['http']['server_rss_after_mb']} "
                 f"MB, **peak {rss} MB** | RSS flat, < 200 MB | {'yes' if rss < 200 else 'no'} |")
    an = f["analytics"]
    for lookback in ("7d", "90d"):
        a = an[lookback]
        target = "90d p50 < 50 ms" if lookback == "90d" else "report"
        met = ("yes" if a["p50_ms"] < 50 else f"no ({a['p50_ms'] / 50:.1f}×)") if lookback == "90d" else "—"
        lines.append(f"| analytics {lookback} | `/billing/usage-analytics?lookback={lookback}`, cache off, heavy user "
                     f"({a['rows_in_range']:,} rows) | **p50 {a['p50_ms']:.1f} ms**, p99 {a['p99_ms']:.1f} ms; naive "
                     f"GROUP BY over raw rows {a['naive']['p50_ms']:.0f} ms | {target} | {met} |")
    missed = [t for t in result["targets"] if not t["met"]]
    lines.append("")
    busy = {name: v for name, v in result.get("other_processes", {}).items()
            if v["other_processes_share_of_machine"] > 0.1}
    if busy:
        lines.append("Other processes shared the machine during " + ", ".join(
            f"{name} ({v['other_processes_cpu_seconds']:.0f} CPU s in {v['seconds']:.0f} s, "
            f"{v['other_processes_share_of_machine']:.0%} of its cores)" for name, v in busy.items()) +
            ": those figures are lower than on an idle machine.")
        lines.append("")
    if missed:
        lines.append("Missed: " + "; ".join(f"{t['figure']}: {t['miss']}" for t in missed) + ".")
    else:
        lines.append("Every target met.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m bench.report RESULT.json: the table again, from a results file
    import json
    from pathlib import Path

    for path in sys.argv[1:]:
        result = json.loads(Path(path).read_text())
        print(markdown(result), end="")
