"""Profiles with py-spy (the `bench` extra): of a running server during one phase, or of a CLI command, written as
collapsed stacks (<name>.raw) and a summary of the top frames by own and by inclusive time (<name>.txt).

Used by `python -m bench.run --profile DIR`; the figures of a profiled run are disturbed by the sampling, so they
are for finding where the time goes, not for the results table.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

RATE = 100  # samples per second


def py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        raise RuntimeError("py-spy is not installed: pip install -e '.[bench]'")
    return found


@contextmanager
def profiled(pid: int | None, directory: Path | None, name: str) -> Iterator[None]:
    """py-spy attached to `pid` for the duration of the block (nothing when directory is None)."""
    if directory is None or pid is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    raw = directory / f"{name}.raw"
    spy = subprocess.Popen([py_spy(), "record", "-p", str(pid), "-f", "raw", "-o", str(raw), "-r", str(RATE),
                            "--nonblocking", "--threads"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
        if raw.exists():
            (directory / f"{name}.txt").write_text(summarise(raw))


def wrap(command: list[str], directory: Path | None, name: str) -> list[str]:
    """The command run under py-spy, when profiling."""
    if directory is None:
        return command
    directory.mkdir(parents=True, exist_ok=True)
    return [py_spy(), "record", "-f", "raw", "-o", str(directory / f"{name}.raw"), "-r", str(RATE), "--", *command]


def summarise_wrapped(directory: Path | None, name: str) -> None:
    """The summary of a command run under wrap()."""
    raw = directory / f"{name}.raw" if directory else None
    if raw is not None and raw.exists():
        (directory / f"{name}.txt").write_text(summarise(raw))


def summarise(raw: Path, top: int = 25) -> str:
    """Top frames of a collapsed-stack file: own time (where the CPU is) and inclusive time (who asked for it)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return "no samples\n"
    lines = [f"{total} samples at {RATE} Hz", "", "own time:"]
    lines += [f"{100 * n / total:6.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "inclusive time:"]
    lines += [f"{100 * n / total:6.1f}%  {frame}" for frame, n in inclusive.most_common(top * 2)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(summarise(Path(path)))
