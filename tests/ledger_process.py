"""`usage-ledger serve` as a real process for the reliability tests: started on a free 127.0.0.1 port, logs kept in
files (appended across restarts), killed with SIGKILL or stopped, and always reaped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

STRONG_TOKEN = "reliability-operator-token-0123456789abcdef"
START_TIMEOUT_S = 60


def cli() -> list[str]:
    """The console script the README gives, from this interpreter's environment."""
    script = Path(sys.executable).parent / "usage-ledger"
    return [str(script)] if script.exists() else [sys.executable, "-m", "usage_ledger.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**settings: str) -> dict[str, str]:
    """The environment without any USAGE_LEDGER_* of the caller's, plus `settings` (names without the prefix)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("USAGE_LEDGER_")}
    env.update({f"USAGE_LEDGER_{name.upper()}": str(value) for name, value in settings.items()})
    return env


def stop(process: subprocess.Popen | None, timeout: float = 15) -> None:
    """SIGTERM, and SIGKILL if it has not exited within `timeout` seconds; always reaped."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class LedgerProcess:
    """One server (re)started on the same port, database and log files."""

    def __init__(self, workdir: Path, database_url: str, token: str = STRONG_TOKEN, **settings: str) -> None:
        self.workdir, self.token = workdir, token
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = clean_env(database_url=database_url, operator_token=token, **settings)
        self.stdout_path, self.stderr_path = workdir / "server.stdout", workdir / "server.stderr"
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def operator(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        banner = f"serving on http://127.0.0.1:{self.port}"
        seen = self.stdout_path.read_text().count(banner) if self.stdout_path.exists() else 0
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self.process = subprocess.Popen([*cli(), "serve", "--port", str(self.port)], cwd=self.workdir,
                                            env=self.env, stdout=out, stderr=err)
        self.starts += 1
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.stdout_path.read_text().count(banner) <= seen:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited {self.process.returncode}: {self.logs()[-2000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"not serving after {START_TIMEOUT_S} s: {self.logs()[-2000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown handler, no flush, nothing but what was already synced survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=30)

    def stop(self) -> None:
        stop(self.process)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in (self.stdout_path, self.stderr_path) if p.exists())

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=kwargs.pop("timeout", 30), **kwargs)

    def __enter__(self) -> "LedgerProcess":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self.kill()
