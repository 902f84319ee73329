"""Preprocessing throughput and peak memory for 32×256×256 blocks (the paper's block size).

Writes ``benchmarks/results/preprocess.md``. Each measurement runs ``prepare_dataset`` in a
fresh subprocess (so its peak RSS is its own) on torso-CT phantom cases rendered at a
fine grid (≈1.2 mm in-plane) and preprocessed to the ``paper`` profile's spacing and block
shape. Peak memory is measured for two dataset sizes: if cases are processed one at a
time, it must not grow with the number of cases (the ratio is reported).

    python benchmarks/bench_preprocess.py [--cases 2 6] [--shape 320 320 48]

Run it on an otherwise idle machine: a second job on these 2 cores distorts the times.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = textwrap.dedent("""
    import json, resource, sys, time, tracemalloc
    from medlsdm.data.prepare import prepare_dataset
    from medlsdm.profiles import notebook_parameters
    raw, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    p = notebook_parameters("paper", "01")
    prepare_dataset("torso-ct", raw, out + "-warmup", spacing=p["spacing"], block_shape=p["block_shape"], n_cases=1)
    t0 = time.perf_counter()
    manifest = prepare_dataset("torso-ct", raw, out, spacing=p["spacing"], block_shape=p["block_shape"], n_cases=n)
    seconds = time.perf_counter() - t0
    tracemalloc.start()  # numpy reports its buffers to tracemalloc: the arrays' peak
    prepare_dataset("torso-ct", raw, out, spacing=p["spacing"], block_shape=p["block_shape"], n_cases=n)
    traced_mb = tracemalloc.get_traced_memory()[1] / 2**20
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row = {"n": n, "seconds": seconds, "peak_mb": peak_mb, "traced_mb": traced_mb, "block_shape": manifest.block_shape}
    print(json.dumps(row))
""")


def run_child(code: str, *args) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, nargs="+", default=[2, 6])
    parser.add_argument("--shape", type=int, nargs=3, default=[320, 320, 48], help="phantom grid (x, y, z)")
    parser.add_argument("--out", default=str(HERE / "results" / "preprocess.md"))
    args = parser.parse_args()

    from medlsdm.atomic import write_text
    from medlsdm.data.phantom import make_phantom

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        t0 = time.perf_counter()
        make_phantom("torso-ct", raw, max(args.cases), seed=0, shape=tuple(args.shape))
        gen_seconds = time.perf_counter() - t0
        rows = [run_child(CHILD, raw, Path(tmp) / f"out{n}", n) for n in args.cases]

    lines = [
        "# Preprocessing benchmark",
        "",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}. "
        f"Phantom torso CT at grid {tuple(args.shape)} (x, y, z) → `paper` profile block "
        f"{rows[0]['block_shape']} (D, H, W). Generation of {max(args.cases)} phantom cases: {gen_seconds:.1f} s "
        "(not counted).",
        "",
        "| cases | seconds | cases / s | peak of traced allocations (MB) | peak RSS of the process (MB) |",
        "|------:|--------:|----------:|--------------------------------:|-----------------------------:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['seconds']:.2f} | {r['n'] / r['seconds']:.2f} | {r['traced_mb']:.1f} | "
            f"{r['peak_mb']:.0f} |"
        )
    first, last = rows[0], rows[-1]
    ratio = last["traced_mb"] / first["traced_mb"]
    lines += [
        "",
        f"Peak traced memory (Python objects and numpy buffers, via tracemalloc), {last['n']} cases vs "
        f"{first['n']}: ratio **{ratio:.2f}** (≈ 1 when cases are processed one at a time; "
        f"≈ {last['n'] / first['n']:.1f} if all cases were held in memory). Times exclude a one-case warm-up run; "
        "peak RSS includes the imported libraries (torch, h5py, scipy).",
        "",
    ]
    print(write_text(args.out, "\n".join(lines)).read_text())


if __name__ == "__main__":
    main()
