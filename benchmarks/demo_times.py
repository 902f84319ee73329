"""Record the run times of a fresh-clone ``make demo``: the numbers the README and notebook headers state.

Every notebook writes its own wall time (``seconds``) into ``metrics.json``; this script copies
them, with the whole demo's seconds (install included, timed by the caller), into
``benchmarks/results/demo_times.json``. ``tests/test_demo_times.py`` checks that each notebook
header's stated quick time and the README's total are within 25 % of this record.

    git clone . /tmp/fresh && cd /tmp/fresh && start=$(date +%s) && make demo && echo $(( $(date +%s) - start ))
    python benchmarks/demo_times.py --run /tmp/fresh/runs/demo --total SECONDS --commit COMMIT
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT = ROOT / "benchmarks" / "results" / "demo_times.json"


def record(run: Path, total: float, commit: str) -> dict:
    from medlsdm.atomic import write_json
    from medlsdm.profiles import METRICS_KEYS

    metrics = json.loads((run / "metrics.json").read_text())
    missing = [key for key in METRICS_KEYS.values() if "seconds" not in metrics.get(key, {})]
    if missing:
        raise SystemExit(f"{run}/metrics.json: no seconds for {missing}: run every notebook first")
    out = {
        "commit": commit,
        "date": datetime.date.today().isoformat(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "total_seconds": round(float(total)),
        "notebook_seconds": {nb: round(float(metrics[key]["seconds"]), 1) for nb, key in METRICS_KEYS.items()},
    }
    write_json(OUT, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="the demo's run directory")
    parser.add_argument("--total", type=float, required=True, help="seconds of the whole make demo, install included")
    parser.add_argument("--commit", required=True, help="the commit the demo ran")
    args = parser.parse_args()
    print(json.dumps(record(args.run, args.total, args.commit), indent=1))


if __name__ == "__main__":
    main()
