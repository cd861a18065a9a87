"""Load generators against 127.0.0.1, always bounded in requests and in time: sequential latency samples, N
concurrent clients for throughput, parallel batch posts for ingest, and a cursor walk for export."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import httpx

TIMEOUT = httpx.Timeout(120.0)


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), -(-len(ordered) * q // 100)))
    return ordered[int(rank) - 1]


def summary_ms(samples: Sequence[float]) -> dict[str, Any]:
    return {"samples": len(samples), "p50_ms": round(percentile(samples, 50) * 1000, 3),
            "p99_ms": round(percentile(samples, 99) * 1000, 3), "min_ms": round(min(samples) * 1000, 3),
            "max_ms": round(max(samples) * 1000, 3)}


class CheckError(RuntimeError):
    """The service answered something other than what the benchmark asked for."""


def check(response: httpx.Response, what: str) -> httpx.Response:
    if response.status_code != 200:
        raise CheckError(f"{what}: HTTP {response.status_code}: {response.text[:300]}")
    return response


def time_requests(client: httpx.Client, make: Callable[[], tuple[str, dict]], samples: int, warmup: int = 2,
                  verify: Callable[[httpx.Response], None] | None = None) -> list[float]:
    """`samples` sequential GETs on one keep-alive connection, after `warmup` unmeasured ones; seconds each."""
    out = []
    for i in range(warmup + samples):
        url, params = make()
        began = time.perf_counter()
        response = client.get(url, params=params)
        elapsed = time.perf_counter() - began
        check(response, url)
        if verify is not None:
            verify(response)
        if i >= warmup:
            out.append(elapsed)
    return out


def time_calls(call: Callable[[], Any], samples: int, warmup: int = 1) -> list[float]:
    out = []
    for i in range(warmup + samples):
        began = time.perf_counter()
        call()
        if i >= warmup:
            out.append(time.perf_counter() - began)
    return out


@dataclass
class Throughput:
    clients: int
    seconds: float
    requests: int
    rows: int
    latencies: list[float]
    client_cpu_seconds: float

    def as_json(self) -> dict[str, Any]:
        return {"clients": self.clients, "seconds": round(self.seconds, 3), "requests": self.requests,
                "requests_per_s": round(self.requests / self.seconds, 1), "rows": self.rows,
                "rows_per_s": round(self.rows / self.seconds, 1), **summary_ms(self.latencies),
                "client_cpu_seconds": round(self.client_cpu_seconds, 2)}


class _Connection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: GET only, Content-Length bodies (what the service
    answers). The throughput load generator uses it because httpx's own CPU cost, on a 2-core machine shared with
    the server, capped /healthz at the client (measured: 8.1 s of client CPU against 2.3 s of server CPU in 10 s)."""

    def __init__(self, host: str, port: int, headers: dict) -> None:
        self.host, self.port = host, port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, target: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.extra}\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _throughput(base_url: str, headers: dict, make: Callable[[random.Random], tuple[str, dict, int]],
                      clients: int, duration: float, max_requests: int, seed: int) -> Throughput:
    url = httpx.URL(base_url)
    latencies: list[float] = []
    rows = 0
    issued = 0
    connections = [_Connection(url.host, url.port, headers) for _ in range(clients)]
    try:
        for connection in connections:  # open every connection before the clock starts
            status, _ = await connection.get("/healthz")
            if status != 200:
                raise CheckError(f"/healthz: HTTP {status}")
        cpu0 = time.process_time()
        began = time.perf_counter()
        deadline = began + duration

        async def worker(n: int) -> None:
            nonlocal rows, issued
            rng = random.Random(f"{seed}:{n}")
            connection = connections[n]
            while time.perf_counter() < deadline and issued < max_requests:
                issued += 1
                path, params, expected_rows = make(rng)
                target = str(httpx.URL(path, params=params)) if params else path
                t = time.perf_counter()
                status, body = await connection.get(target)
                latencies.append(time.perf_counter() - t)
                if status != 200:
                    raise CheckError(f"{target}: HTTP {status}: {body[:300]!r}")
                rows += expected_rows

        await asyncio.gather(*(worker(n) for n in range(clients)))
        seconds = time.perf_counter() - began
        cpu = time.process_time() - cpu0
    finally:
        for connection in connections:
            connection.close()
    return Throughput(clients, seconds, len(latencies), rows, latencies, cpu)


def throughput(base_url: str, headers: dict, make: Callable[[random.Random], tuple[str, dict, int]], *,
               clients: int, duration: float, max_requests: int, seed: int = 1) -> Throughput:
    """`clients` concurrent keep-alive connections issuing GETs until `duration` seconds or `max_requests` pass."""
    return asyncio.run(_throughput(base_url, headers, make, clients, duration, max_requests, seed))


async def _post_all(base_url: str, headers: dict, path: str, bodies: list[bytes], clients: int,
                    deadline_s: float) -> tuple[float, int, list[dict]]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    queue = list(reversed(bodies))
    answers: list[dict] = []
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=TIMEOUT) as client:
        for _ in range(clients):
            check(await client.get("/healthz"), "/healthz")
        began = time.perf_counter()

        async def worker() -> None:
            while queue:
                if time.perf_counter() - began > deadline_s:
                    raise CheckError(f"POST {path} took more than {deadline_s:.0f} s")
                body = queue.pop()
                response = check(await client.post(path, content=body), path)
                answers.append(response.json())

        await asyncio.gather(*(worker() for _ in range(clients)))
        seconds = time.perf_counter() - began
    recorded = sum(a["recorded"] for a in answers)
    return seconds, recorded, answers


def post_all(base_url: str, headers: dict, path: str, bodies: list[bytes], *, clients: int,
             deadline_s: float) -> tuple[float, int, list[dict]]:
    """POST every body with `clients` concurrent clients: (seconds, records recorded, answers)."""
    return asyncio.run(_post_all(base_url, headers, path, bodies, clients, deadline_s))


def walk_history(client: httpx.Client, params: dict, on_page: Callable[[int], None] | None = None,
                 max_pages: int = 10**6) -> tuple[float, int, int]:
    """The whole usage-history walk as CSV, following x-next-cursor: (seconds, rows, bytes)."""
    rows = size = pages = 0
    cursor = None
    began = time.perf_counter()
    while True:
        query = {"cursor": cursor, "pageSize": params.get("pageSize")} if cursor else params
        response = check(client.get("/api/v1/billing/usage-history", params=query, headers={"Accept": "text/csv"}),
                         "usage-history")
        body = response.content
        rows += body.count(b"\r\n") - 1  # header line
        size += len(body)
        pages += 1
        if on_page:
            on_page(pages)
        cursor = response.headers.get("x-next-cursor")
        if not cursor:
            break
        if pages >= max_pages:
            raise CheckError(f"usage-history walk passed {max_pages} pages")
    return time.perf_counter() - began, rows, size
