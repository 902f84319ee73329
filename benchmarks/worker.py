"""Run one benchmark measurement in a fresh process: ``python SCRIPT --worker '<json cfg>'``
prints one JSON line, which :func:`run_worker` returns (or the error, as a row)."""
from __future__ import annotations

import json
import subprocess
import sys


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
