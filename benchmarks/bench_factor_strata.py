"""Benchmark: how far a training cohort's hidden factors stray from their prior (statistics, not speed).

A phantom cohort is a small sample of its factor prior. Drawn i.i.d., the quick profile's 36
training cases (seed 0) had a mean bone density 53 HU below the prior mean of U(300, 700), 2.7
standard errors: a diffusion model learns that cohort, and the oracle (fresh i.i.d. draws)
then finds its samples biased even if it learned the cohort perfectly. Since phantom version 4
the cases' own factors are stratified in runs of 12 cases
(:func:`medlsdm.data.phantom.common.stratified_units`). For many dataset seeds this compares
both draws on the training split of the quick profile's split (60 cases, 60/20/20 by
patient, split seed = dataset seed): the error of the training cohort's mean of each numeric
torso factor, in prior standard deviations.

    python benchmarks/bench_factor_strata.py            # writes benchmarks/results/factor_strata.md
    python benchmarks/bench_factor_strata.py --seeds 20  # smoke check
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medlsdm.data.phantom.common import appearance_streams  # noqa: E402
from medlsdm.data.phantom.render import _appearance  # noqa: E402
from medlsdm.data.phantom.torso import STEATOSIS_QUANTILES, TORSO_FACTORS, draw_torso_factors  # noqa: E402
from medlsdm.data.splits import make_split  # noqa: E402

#: The numeric torso factors, each as the U(0, 1) number it was drawn from (prior mean 1/2, sd 1/√12):
#: bone density and noise drawn uniformly in a range, steatosis through its quantile function.
UNIFORM = {
    "steatosis": lambda v: np.interp(v, STEATOSIS_QUANTILES[1], STEATOSIS_QUANTILES[0]),
    "bone_hu": lambda v: (v - 300.0) / 400.0,
    "noise_hu": lambda v: (v - 8.0) / 17.0,
}


def cohort_errors(seed: int, n_cases: int) -> dict[str, dict[str, float]]:
    """Per draw (i.i.d., stratified) and factor: (training-cohort mean − prior mean) / prior sd."""
    ids = [f"torso_{i:03d}" for i in range(n_cases)]
    train = [int(c.split("_")[1]) for c in make_split([(c, c) for c in ids], seed=seed)["train"]]
    draws = {
        "i.i.d.": [draw_torso_factors(appearance_streams("torso-ct", seed, i, stratified=False)[0]) for i in train],
        "stratified": [_appearance("torso-ct", seed, i, None, None)[0] for i in train],
    }
    out = {}
    for name, factors in draws.items():
        out[name] = {f: (np.mean([unit(d[f]) for d in factors]) - 0.5) * np.sqrt(12) for f, unit in UNIFORM.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=500)
    parser.add_argument("--n-cases", type=int, default=60)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "factor_strata.md"))
    args = parser.parse_args()
    assert {f.name for f in TORSO_FACTORS} >= set(UNIFORM)
    runs = [cohort_errors(s, args.n_cases) for s in range(args.seeds)]
    n_train = len(make_split([(str(i), str(i)) for i in range(args.n_cases)], seed=0)["train"])
    se_iid = 1 / np.sqrt(n_train)
    lines = [
        "# Training-cohort factor means: i.i.d. against stratified draws",
        "",
        f"`python benchmarks/bench_factor_strata.py --seeds {args.seeds}` ({datetime.date.today()}): "
        f"{args.seeds} dataset seeds, {args.n_cases} torso cases, the {n_train} training cases of each seed's split. "
        "Error of the cohort mean of each factor, in prior standard deviations; i.i.d. draws have a standard "
        f"error of 1/√{n_train} = {se_iid:.3f}.",
        "",
        "| factor | draw | RMS error | 95th percentile of abs error | seeds with abs error > 2 i.i.d. SE | seed 0 |",
        "|---|---|---|---|---|---|",
    ]
    for f in UNIFORM:
        for draw in ("i.i.d.", "stratified"):
            e = np.array([r[draw][f] for r in runs])
            lines.append(
                f"| {f} | {draw} | {np.sqrt(np.mean(e**2)):.3f} | {np.percentile(np.abs(e), 95):.3f} | "
                f"{np.mean(np.abs(e) > 2 * se_iid):.1%} | {e[0]:+.3f} |"
            )
    ratio = {
        f: np.sqrt(np.mean([r["stratified"][f] ** 2 for r in runs]) / np.mean([r["i.i.d."][f] ** 2 for r in runs]))
        for f in UNIFORM
    }
    # a split takes a random n_train of the n_cases strata: the finite-population correction
    fpc = np.sqrt((args.n_cases - n_train) / (args.n_cases - 1))
    lines += [
        "",
        "RMS error stratified / i.i.d.: " + ", ".join(f"{f} {v:.2f}" for f, v in ratio.items()) + ". "
        f"Expected: i.i.d. {se_iid:.3f}; stratified about {se_iid * fpc:.3f} (a random {n_train} of "
        f"{args.n_cases} strata, ratio √(({args.n_cases} − {n_train}) / ({args.n_cases} − 1)) = {fpc:.2f}).",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
