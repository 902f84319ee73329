"""Benchmark: do the samples of one label map draw their appearance from their noise? (quality)

Trains notebook 03's diffusion model (quick settings) with each option below, on a prepared
quick phantom run (``--data``: notebook 01's ``data/`` of the quick torso phantom;
``--vqgan``: a folder holding ``model/``, e.g. notebook 02's ``RUN/vqgan``), then samples
the *validation* label maps (DDIM-50, guidance 1, 4 seeds, as notebook 04) and compares them
with 8 oracle re-renders of each map (:func:`medlsdm.evaluation.oracle.compare_with_oracle`):

- per factor the within-map spread ratio (samples' sd within one map over the oracle's; 1 is
  right, near 0 means the label map fixes the factor), beside the oracle half-against-half;
- per factor KS p and W1 against the oracle, the diversity ratio, the counted factors.

Options: ``no-swaps`` (the quick profile's notebook 03 without appearance swaps), ``swap-N`` (``appearance_swaps=N``:
N copies of every training case with another training case's class means,
:func:`medlsdm.training.augment.swap_class_means`), ``cond-drop-0.3`` (condition dropout 0.3
instead of 0.1), ``lowres-1`` (``lowres_weight=1``: a multiscale loss that weights the
coarse, organ-mean part of the error 65× more, :func:`medlsdm.training.diffusion.pooled_error`).

    python benchmarks/bench_factor_spread.py --data RUN/data --vqgan RUN/vqgan --work W train --option swap-3 --seed 0
    python benchmarks/bench_factor_spread.py --work W report  # W: a work folder; writes results/factor_spread.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker import append_row, write_report  # noqa: E402  (benchmarks/worker.py)

OPTIONS = {
    "no-swaps": dict(appearance_swaps=0),
    "swap-1": dict(appearance_swaps=1),
    "swap-3": dict(appearance_swaps=3),  # the quick profile's
    "cond-drop-0.3": dict(cond_drop_prob=0.3),
    "lowres-1": dict(lowres_weight=1.0),
}
N_SAMPLES, N_ORACLE, SAMPLE_STEPS = 4, 8, 50


def train(work: Path, data: Path, vqgan: Path, option: str, seed: int, n_maps: int | None) -> dict:
    from medlsdm.data.phantom import oracle as phantom_oracle
    from medlsdm.data.prepare import load_manifest
    from medlsdm.data.splits import load_split
    from medlsdm.data.store import CaseStore, stack_cases
    from medlsdm.evaluation import oracle
    from medlsdm.evaluation.reconstruction import reconstruct
    from medlsdm.pipelines.loading import load_pipeline
    from medlsdm.pipelines.synthesis import samples_per_map, use_scheduler
    from medlsdm.profiles import PROFILES
    from medlsdm.training.diffusion import train_diffusion

    run = work / "runs" / f"{option}-{seed}"
    run.mkdir(parents=True, exist_ok=True)
    for name, target in (("data", data), ("vqgan", vqgan)):
        if not (run / name).exists():
            os.symlink(Path(target).resolve(), run / name)
    q03 = {k: v for k, v in PROFILES["quick"]["03"].items() if k != "sample_every"}
    t0 = time.perf_counter()
    train_diffusion(run, progress=False, resume=False, seed=seed, **{**q03, **OPTIONS[option]})
    seconds = time.perf_counter() - t0
    manifest, split = load_manifest(run / "data"), load_split(run / "data" / "split.json")
    ids = split["val"][:n_maps]
    with CaseStore(run / "data" / "cases.h5") as store:
        _, labels, _ = stack_cases(store, ids)
    pipe = use_scheduler(load_pipeline(run), "ddim")
    samples = samples_per_map(pipe, labels, N_SAMPLES, steps=SAMPLE_STEPS, seed=0)
    raw = phantom_oracle.oracle_samples(run / "data", ids, N_ORACLE, seed=0)
    rec = reconstruct(pipe.vqgan, raw.reshape(-1, *raw.shape[2:]), np.repeat(labels, N_ORACLE, axis=0)).images.reshape(
        raw.shape
    )
    judged = oracle.compare_with_oracle(samples, rec, raw, labels, manifest.classes, manifest.dataset)
    row = {
        "option": option,
        "seed": seed,
        "settings": OPTIONS[option],
        "train_seconds": round(seconds, 1),
        "n_maps": len(ids),
        **{
            k: judged[k]
            for k in (
                "diversity_ratio",
                "diversity_reference",
                "factor_spread_ratio",
                "factor_spread_reference",
                "counted",
                "factor_preserved",
            )
        },
        "ks_p": {f: c["ks_p"] for f, c in judged["factor_all"].items()},
        "w1": {f: c["w1"] for f, c in judged["factor_all"].items()},
    }
    append_row(work, row)
    return row


def report(rows: list[dict]) -> str:
    import torch

    factors = [f for f in rows[0]["factor_spread_ratio"]]
    lines = [
        "# Within-map spread of the hidden factors: which training option lets the noise draw the appearance?",
        "",
        f"Written by `benchmarks/bench_factor_spread.py` on {datetime.datetime.now().isoformat(timespec='seconds')}: "
        f"{platform.machine()}, torch {torch.__version__}. Quick torso phantom, quick notebook-03 settings except the "
        f"option; {rows[0]['n_maps']} validation label maps × {N_SAMPLES} samples (DDIM-{SAMPLE_STEPS}, guidance 1) "
        f"against {N_ORACLE} oracle re-renders per map. Spread ratio: within-map sd of a factor, samples over oracle "
        "(1 right, 0: the label map fixes it); KS p: samples against the oracle, pooled over maps. Counted factors "
        "(the autoencoder keeps them, r ≥ 0.9) in bold. Train seconds are comparable only between rows run alone.",
        "",
        "| option | seed | train s | diversity | " + " | ".join(f"{f} spread / KS p" for f in factors) + " |",
        "|---|---|---|---|" + "---|" * len(factors),
    ]
    ref = rows[0]
    lines.append(
        f"| oracle half vs half | – | – | {ref['diversity_reference']:.2f} | "
        + " | ".join(f"{ref['factor_spread_reference'][f]:.2f} / –" for f in factors)
        + " |"
    )
    for r in sorted(rows, key=lambda r: (r["option"], r["seed"])):
        cells = []
        for f in factors:
            cell = f"{r['factor_spread_ratio'][f]:.2f} / {r['ks_p'][f]:.3g}"
            cells.append(f"**{cell}**" if f in r["counted"] else cell)
        lines.append(
            f"| {r['option']} | {r['seed']} | {r['train_seconds']} | {r['diversity_ratio']:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", "Raw numbers:", "", "```json", json.dumps(rows, indent=1), "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="working folder (runs, rows.jsonl)")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one option with one seed and append its row")
    t.add_argument("--data", type=Path, required=True, help="a quick phantom run's data/ folder (notebook 01)")
    t.add_argument(
        "--vqgan", type=Path, required=True, help="a folder holding the VQ-GAN's model/ (notebook 02's RUN/vqgan)"
    )
    t.add_argument("--option", choices=list(OPTIONS), required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--n-maps", type=int, default=None, help="validation maps to sample (default: all)")
    r = sub.add_parser("report", help="write the report from WORK/rows.jsonl")
    r.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "factor_spread.md")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.command == "train":
        train(args.work, args.data, args.vqgan, args.option, args.seed, args.n_maps)
    else:
        write_report(args.work, args.out, report)


if __name__ == "__main__":
    main()
