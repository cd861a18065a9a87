"""The service as a real process (`usage-ledger serve` on a free 127.0.0.1 port), and what /proc says about it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

OPERATOR_TOKEN = "bench-operator-token-0123456789abcdefghij"
START_TIMEOUT = 120.0


def cli_command() -> list[str]:
    """The installed `usage-ledger` console script of this interpreter's environment."""
    beside = Path(sys.executable).parent / "usage-ledger"
    found = str(beside) if beside.exists() else shutil.which("usage-ledger")
    if not found:
        raise RuntimeError("usage-ledger is not installed: pip install -e . first")
    return [found]


def service_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USAGE_LEDGER_")}
    env.update({
        "USAGE_LEDGER_DATABASE_URL": database_url,
        "USAGE_LEDGER_OPERATOR_TOKEN": OPERATOR_TOKEN,
        "USAGE_LEDGER_AUTH_FAILURE_LIMIT": "0",
        "USAGE_LEDGER_ANALYTICS_CACHE_SECONDS": "0",  # every analytics request is computed
        "USAGE_LEDGER_KEY_RATE_LIMIT_PER_MINUTE": "0",  # the load generators are one key at hundreds of requests/s
        **extra,
    })
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0]) * 1024
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    process: subprocess.Popen
    base_url: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss(self) -> dict[str, int]:
        return proc_status(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)


@contextmanager
def serve(database_url: str, log_path: Path, **extra_env: str) -> Iterator[Server]:
    """`usage-ledger serve` on a free port; waits for its "serving on" line; always terminated on the way out.

    Its stdout (uvicorn's access log) and stderr go straight to a file, not through a pipe to this process: a pipe
    would make the load generator's process carry the server's logging, and throttle the server when it lags."""
    port = free_port()
    log_path.unlink(missing_ok=True)
    log = open(log_path, "wb")
    process = subprocess.Popen([*cli_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
                               env=service_env(database_url, **extra_env), stdout=log, stderr=log,
                               stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while b"serving on" not in log_path.read_bytes()[:1 << 20]:
            if process.poll() is not None:
                raise RuntimeError(f"usage-ledger serve exited with {process.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"usage-ledger serve did not start within {START_TIMEOUT:.0f} s; see {log_path}")
            time.sleep(0.05)
        yield Server(process, f"http://127.0.0.1:{port}")
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(15)
        log.close()


def run_measured(command: list[str], env: dict[str, str], log_path: Path, timeout: float) -> tuple[float, int, int]:
    """Run a command to completion: (wall seconds, exit code, peak RSS in bytes of that process)."""
    with open(log_path, "ab") as log:
        began = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = began + timeout
        try:
            while True:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    wall = time.perf_counter() - began
                    process.returncode = os.waitstatus_to_exitcode(status)
                    return wall, process.returncode, usage.ru_maxrss * 1024
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"{command[0]} took more than {timeout:.0f} s")
                time.sleep(0.005)
        finally:
            if process.returncode is None:
                process.kill()
                process.wait()
