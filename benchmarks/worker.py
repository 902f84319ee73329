"""What the benchmarks' workers share: one measurement in a fresh process (``python SCRIPT
--worker '<json cfg>'`` prints one JSON line, which :func:`run_worker` returns, or the error as
a row), the timing of training steps, the process's memory, and the rows of benchmarks run one
row at a time (``WORK/rows.jsonl``) with the report written from them."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

MIB = 2**20


def run_worker(script: str, cfg: dict, timeout: float) -> dict:
    """``cfg`` plus the worker's measurements, or plus ``"error"`` (time limit, crash, memory)."""
    cmd = [sys.executable, script, "--worker", json.dumps(cfg)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**cfg, "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode} (killed: out of memory?)"]
        return {**cfg, "error": tail[0][:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def timed(step: Callable[[], None], n: int) -> list[float]:
    """Seconds of each of ``n`` calls of ``step``."""
    times = []
    for _ in range(int(n)):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def rss_mib() -> float:
    """Current resident set size (MiB), from /proc (Linux; NaN elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / MIB
    except OSError:
        return float("nan")


def peak_mib() -> float:
    """Peak resident set size of this process so far (MiB): ``getrusage`` sees torch's C++ allocations."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def append_row(work: Path, row: dict) -> None:
    """Add one measured row to ``WORK/rows.jsonl`` (and print it)."""
    with open(Path(work) / "rows.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def write_report(work: Path, out: Path, report: Callable[[list[dict]], str]) -> None:
    """Write ``report(rows)`` of every row in ``WORK/rows.jsonl`` to ``out`` (atomically)."""
    from medlsdm.atomic import atomic_path

    rows = [json.loads(line) for line in (Path(work) / "rows.jsonl").read_text().splitlines() if line.strip()]
    with atomic_path(out) as tmp:
        Path(tmp).write_text(report(rows))
    print(f"wrote {out}")
