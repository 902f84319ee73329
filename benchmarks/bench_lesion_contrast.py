"""Benchmark: how visible are the torso phantom's lesions, and how does steatosis hide them?

For every lesion (connected component) of a run's training cases (notebook 01 done) it measures
the lesion's mean against a 2-voxel ring of liver around it (HU, from the preprocessed image) and
that difference over the ring's own sd (texture and noise), per case's steatosis. Rows of several
runs (e.g. phantom versions) stand side by side.

    python benchmarks/bench_lesion_contrast.py --run runs/demo --run /tmp/v4/runs/demo
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: steatosis strata of the report (the prior's knots, ``STEATOSIS_QUANTILES``)
STRATA = ((0.0, 0.1), (0.1, 0.25), (0.25, 1.01))


def lesions(run_dir: Path) -> dict:
    """Per-lesion contrast of a run's training cases, with the phantom's version and factors."""
    from medlsdm.data.phantom import load_factors, phantom_version
    from medlsdm.data.prepare import load_manifest
    from medlsdm.data.splits import load_split
    from medlsdm.evaluation.cases import real_cases
    from medlsdm.rundir import RunDir

    run = RunDir(run_dir)
    manifest = load_manifest(run.data)
    window = manifest.normalisation["window"]
    hu_per_unit = (window[1] - window[0]) / 2  # [-1, 1] ← the CT window
    factors = load_factors(run.data_root())
    lesion, liver = manifest.classes.index("lesion"), manifest.classes.index("liver")
    cases = real_cases(run, load_split(run.split_path)["train"])
    rows = []
    for case, image, label in zip(cases.ids, cases.images, cases.labels):
        components, n = ndimage.label(label == lesion)
        for k in range(1, n + 1):
            inside = components == k
            ring = ndimage.binary_dilation(inside, iterations=2) & ~inside & (label == liver)
            if ring.sum() < 5:
                continue
            diff = float(image[0][inside].mean() - image[0][ring].mean()) * hu_per_unit
            sd = float(image[0][ring].std()) * hu_per_unit
            rows.append(
                {
                    "case": case,
                    "voxels": int(inside.sum()),
                    "steatosis": factors[case]["steatosis"],
                    "diff_hu": diff,
                    "ring_sd_hu": sd,
                }
            )
    return {"run": str(run_dir), "version": phantom_version(run.data_root()), "cases": len(cases), "lesions": rows}


def report(results: list[dict]) -> str:
    lines = [
        "# Lesion contrast of the torso phantom",
        "",
        f"Written by `benchmarks/bench_lesion_contrast.py` on {datetime.datetime.now().isoformat(timespec='seconds')}:"
        " every lesion of a run's training cases (quick grid), its mean against a 2-voxel ring of liver around it"
        " (HU) and that difference over the ring's sd (texture and noise). Visible: |difference| > ring sd.",
        "",
        "| phantom version | lesions | difference (HU) min / median / max | visible | "
        + " | ".join(f"visible, steatosis {lo:g}-{min(hi, 1):g}" for lo, hi in STRATA)
        + " |",
        "|---|---|---|---|" + "---|" * len(STRATA),
    ]
    for r in results:
        diff = np.array([x["diff_hu"] for x in r["lesions"]])
        visible = np.abs(diff) > np.array([x["ring_sd_hu"] for x in r["lesions"]])
        steatosis = np.array([x["steatosis"] for x in r["lesions"]])
        strata = []
        for lo, hi in STRATA:
            m = (steatosis >= lo) & (steatosis < hi)
            strata.append(f"{visible[m].sum()}/{m.sum()}")
        lines.append(
            f"| {r['version']} | {len(diff)} ({r['cases']} cases) | {diff.min():+.0f} / {np.median(diff):+.0f} / "
            f"{diff.max():+.0f} | {visible.mean():.0%} | " + " | ".join(strata) + " |"
        )
    lines += ["", "```json", *[json.dumps(r) for r in results], "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, action="append", required=True, help="a run with notebook 01 done")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lesion_contrast.md")
    args = parser.parse_args()
    from medlsdm.atomic import write_text

    write_text(args.out, report([lesions(run) for run in args.run]))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
