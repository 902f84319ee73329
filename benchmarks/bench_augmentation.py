"""Benchmark: does synthetic data help a segmentation network, pooled over generator seeds? (quality)

Notebook 05 trains one generator and measures its augmentation arms with the quick judge; one
generator's result says nothing about the next training of it. This benchmark trains the
generator (notebooks 01-03, quick settings) with several seeds on the same data, then trains the
judge of :mod:`medlsdm.training.judge` per arm and judge seed, and reports every arm pooled over
generator and judge seeds, each gain over real-small with a bootstrap CI that resamples
generators, then judge seeds within them, then the test cases
(:func:`medlsdm.metrics.statistics.hierarchical_bootstrap_ci`). The arms are notebook 05's
(:func:`medlsdm.evaluation.augmentation.augmentation_experiment`); ``real_small``, ``real_small_oracle`` and
``real_all`` need no generator and are measured once per judge seed.

    python benchmarks/bench_augmentation.py --work /tmp/ba train --generator-seed 1
    python benchmarks/bench_augmentation.py --work /tmp/ba arms --run /tmp/ba/runs/g1-spade --judge-seeds 0,1
    python benchmarks/bench_augmentation.py --work /tmp/ba report   # benchmarks/results/augmentation.md and .json

``arms --arms real_small,real_small_oracle,real_all`` measures the generator-free arms alone;
``real_small_borrowed_codes`` (a SPADE decoder only) is a control of the diffusion model: each new
anatomy decoded from the codes of a real-small case (:func:`borrowed_codes`), no diffusion model;
``real_small_oracle_lesion_edits`` is the control of the lesion edits: the same lesions in the same
cases, drawn and rendered by the phantom itself (:func:`medlsdm.evaluation.augmentation.oracle_lesion_edits`);
``--judge-options '{"max_steps": 1000}'`` sets the judge (default: notebook 05's quick judge).
Judges train on one thread; rows are appended to ``WORK/rows.jsonl`` as they finish.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker import append_row, write_report  # noqa: E402  (benchmarks/worker.py)

from medlsdm.profiles import notebook_parameters  # noqa: E402

ARMS = (
    "real_small",
    "real_small_oracle",
    "real_small_oracle_autoencoded",
    "real_small_synthetic",
    "real_small_borrowed_codes",
    "real_small_lesion_edits",
    "real_small_oracle_lesion_edits",
    "real_all",
)
#: Arms whose training data no generator makes: measured once, shared by every generator seed.
GENERATOR_FREE = ("real_small", "real_small_oracle", "real_small_oracle_lesion_edits", "real_all")


def train(work: Path, generator_seed: int, decoder: str) -> None:
    """Notebooks 01 (data, seed 0 for every generator) and 02-03 (``seed`` = the generator seed,
    notebook 02's ``decoder_type`` = ``decoder``), one notebook at a time."""
    run = work / "runs" / f"g{generator_seed}-{decoder}"
    medlsdm = [sys.executable, "-m", "medlsdm.cli", "run", "--profile", "quick", "--run-dir", str(run), "--jobs", "1"]
    subprocess.run(medlsdm + ["--only", "01"], check=True)
    subprocess.run(
        medlsdm + ["--only", "02", "-p", f"seed={generator_seed}", "-p", f"decoder_type={decoder}"], check=True
    )
    subprocess.run(medlsdm + ["--only", "03", "-p", f"seed={generator_seed}"], check=True)


def borrowed_codes(vqgan, new, real):
    """The new anatomies ``new`` decoded by a SPADE ``vqgan`` from the codes of the real cases ``real``
    (new anatomy ``i`` from real case ``i mod len(real)``; every block one shape): what the decoder
    makes of a label map without the diffusion model."""
    import torch

    from medlsdm.evaluation.cases import Cases

    if vqgan.config.decoder_type != "spade":
        raise SystemExit("real_small_borrowed_codes needs a SPADE decoder: a normal one ignores the new label map")
    images = []
    with torch.no_grad():
        for i, label in enumerate(new.labels):
            x = torch.as_tensor(np.asarray(real.images[i % len(real.images)], np.float32))[None]
            z = vqgan.quantize(vqgan.encode(x).latents, update=False)[0]
            lab = torch.as_tensor(np.asarray(label, np.int64).reshape(x.shape[2:]))[None]
            images.append(vqgan.decode(z, force_not_quantize=True, labels=lab).sample[0].clamp(-1, 1).numpy())
    return Cases(new.ids, images, new.labels, new.affines)


def arms(work: Path, run_dir: Path, names: list[str], judge_seeds: list[int], options: dict, generator: int) -> None:
    """Train the judges of the arms ``names`` (one per judge seed) and append their Dice on the test cases."""
    import torch

    from medlsdm.data.phantom import phantom_version
    from medlsdm.data.prepare import load_manifest
    from medlsdm.data.splits import load_split
    from medlsdm.evaluation import augmentation as aug_ev
    from medlsdm.evaluation import run as ev
    from medlsdm.evaluation.cases import dice_over_seeds, real_cases, train_judges
    from medlsdm.pipelines.loading import load_pipeline
    from medlsdm.rundir import RunDir

    torch.set_num_threads(1)
    p = notebook_parameters("quick", "05")
    options = {**p["judge_options"], **options}
    run = RunDir(run_dir)
    manifest, split = load_manifest(run.data), load_split(run.split_path)
    classes = manifest.classes
    train_cases, val, test = (real_cases(run, split[k]) for k in ("train", "val", "test"))
    small = train_cases.head(p["n_small"])
    phantom = phantom_version(run.data_root())  # the data's version, recorded in every row
    generator_settings = None  # the generator's decoder and steps (aug_ev.generator_settings)
    if set(names) <= set(GENERATOR_FREE):  # no generator needed: the oracle renders alone
        extras = {"oracle": aug_ev.new_anatomy_oracle(run, ev.new_anatomy_labels(run, p["n_new"])[0])}
    else:
        pipe = load_pipeline(run.root)
        generator_settings = aug_ev.generator_settings(run, pipe)
        syn, _ = ev.synthetic_sets(run, pipe, split, n_test=0, n_train_maps=0, n_new=p["n_new"], seed=0)
        extras = aug_ev.augmentation_extras(run, pipe, syn["new"])
        if "real_small_borrowed_codes" in names:
            extras["borrowed_codes"] = borrowed_codes(pipe.vqgan, syn["new"], small)
        if "real_small_lesion_edits" in names:  # notebook 05's lesion edits
            extras["lesion_edits"] = aug_ev.lesion_edits(pipe, small, classes, manifest.spacing, seed=0)
    if "real_small_oracle_lesion_edits" in names:  # the same lesions drawn by the phantom: the perfect edit
        extras["oracle_lesion_edits"] = aug_ev.oracle_lesion_edits(run, small, classes, seed=0)
    for name in names:
        cases = train_cases if name == "real_all" else small
        extra = extras[name.removeprefix("real_small_")] if name.startswith("real_small_") else None
        for seed in judge_seeds:
            t0 = time.perf_counter()
            fit = train_judges(cases, val, len(classes), seeds=[seed], options=options, progress=False, extra=extra)[0]
            dice = dice_over_seeds([fit.model], test, classes)
            append_row(
                work,
                {
                    "run": str(run_dir),
                    "generator": None if name in GENERATOR_FREE else generator,
                    "generator_settings": None if name in GENERATOR_FREE else generator_settings,
                    "arm": name,
                    "phantom": phantom,
                    "judge_seed": seed,
                    "options": options,
                    "organ": dice["organ"],
                    "lesion": dice["lesion"],
                    "lesion_by_seed": dice["lesion_by_seed"][0],
                    "has_lesion": [bool((lab == classes.index("lesion")).any()) for lab in test.labels],
                    "lesions_found": dice["lesions_found"][0],
                    "lesions_total": dice["lesions_total"][0],
                    "best_step": fit.best_step,
                    "stopped_step": fit.stopped_step,
                    "seconds": round(time.perf_counter() - t0, 1),
                },
            )


def generator_of(row: dict) -> dict:
    """The generator settings of a row (rows written before they were recorded name the decoder only)."""
    return row.get("generator_settings") or {"decoder": row.get("decoder") or "normal"}


def pooled(rows: list[dict], arm: str, key: str = "organ") -> np.ndarray:
    """``(judge seeds, cases)`` Dice of a generator-free arm, or ``(generators, judge seeds, cases)``:
    ``key`` ``"organ"`` (every test case) or ``"lesion"`` (the test cases with a lesion, from
    rows that record them)."""
    mine = [r for r in rows if r["arm"] == arm]
    generators = sorted({r["generator"] for r in mine}, key=str)

    def values(r: dict) -> list[float]:
        return r["organ"] if key == "organ" else [v for v, h in zip(r["lesion_by_seed"], r["has_lesion"]) if h]

    by = [[values(r) for r in sorted(mine, key=lambda r: r["judge_seed"]) if r["generator"] == g] for g in generators]
    if len({len(b) for b in by}) != 1:
        raise SystemExit(f"{arm}: generators with different numbers of judge seeds: {[len(b) for b in by]}")
    return np.asarray(by[0] if arm in GENERATOR_FREE else by, float)


def summary(rows: list[dict]) -> dict:
    """Every measured arm pooled over generators and judge seeds: organ Dice, its gain over
    real-small with the hierarchical CI, the lesion gain (test cases with a lesion) where the rows
    record it; and the synthetic arm's share of the oracle arm's gain (``benchmarks/results/augmentation.json``,
    which notebook 05 prints beside its own one-generator numbers)."""
    from medlsdm.metrics.statistics import hierarchical_bootstrap_ci

    settings = {json.dumps(generator_of(r), sort_keys=True) for r in rows if r["arm"] not in GENERATOR_FREE}
    judges = {json.dumps(r["options"], sort_keys=True) for r in rows}
    phantoms = {json.dumps(r.get("phantom")) for r in rows}  # rows written before it was recorded: null
    for what, found in (("generators", settings), ("judges", judges), ("phantom versions", phantoms)):
        if len(found) > 1:
            raise SystemExit(f"rows of {what} with other settings {sorted(found)}: report each from its own --work")
    measured = [a for a in ARMS if any(r["arm"] == a for r in rows)]
    base = pooled(rows, "real_small") if "real_small" in measured else None
    arms = {}
    for arm in measured:
        mine = [r for r in rows if r["arm"] == arm]
        dice = pooled(rows, arm)
        out = {
            "generators": len({r["generator"] for r in mine}) if arm not in GENERATOR_FREE else None,
            "judge_seeds": len({r["judge_seed"] for r in mine}),
            "organ": float(dice.mean()),
            "lesion": float(np.nanmean([v for r in mine for v in r["lesion"]])),
            "lesions_found": sum(r["lesions_found"] for r in mine) / max(1, sum(r["lesions_total"] for r in mine)),
            "best_steps": [r["best_step"] for r in mine],
            "stopped_steps": [r["stopped_step"] for r in mine],
            "seconds": float(np.mean([r["seconds"] for r in mine])),
        }
        if base is not None and arm != "real_small":
            out.update(
                gain=float(dice.mean() - base.mean()), gain_ci=list(hierarchical_bootstrap_ci(dice, base, seed=0))
            )
            if all("has_lesion" in r for r in rows if r["arm"] in (arm, "real_small")):
                a, b = pooled(rows, arm, "lesion"), pooled(rows, "real_small", "lesion")
                out.update(
                    lesion_gain=float(a.mean() - b.mean()), lesion_gain_ci=list(hierarchical_bootstrap_ci(a, b, seed=0))
                )
        arms[arm] = out
    gains = {arm: a["gain"] for arm, a in arms.items() if "gain" in a}
    share = (
        gains["real_small_synthetic"] / gains["real_small_oracle"]
        if "real_small_synthetic" in gains and gains.get("real_small_oracle", 0) > 0
        else None
    )
    return {
        "written": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "judge": rows[0]["options"],
        "phantom": json.loads(phantoms.pop()),
        "generator": json.loads(settings.pop()) if settings else None,
        "arms": arms,
        "fraction_of_oracle_gain": share,
    }


def report(rows: list[dict], note: str = "") -> str:
    """The markdown report of :func:`summary`, with every row."""
    s = summary(rows)

    def pair(a: dict, key: str) -> str:
        return f"{a[key]:+.3f} [{a[key + '_ci'][0]:+.3f}, {a[key + '_ci'][1]:+.3f}]" if key in a else ""

    lines = [
        "# Augmentation arms pooled over generator and judge seeds",
        "",
        f"Written by `benchmarks/bench_augmentation.py` on {s['written']}: {s['machine']}, quick profile, test "
        f"split (12 cases), phantom version {s['phantom']}. Judge: {s['judge']}. Generators: {s['generator']}. "
        "Gain: organ Dice "
        "over real-small, per test case (lesion gain: lesion Dice, on the test cases with a lesion); CI: 95 % "
        "bootstrap over generators, judge seeds within them, and cases." + (f" {note}" if note else ""),
        "",
        "| arm | generators | judge seeds | organ Dice | gain over real-small [95 % CI] | lesion Dice | "
        "lesion gain [95 % CI] | lesions found | best / stopped steps | s per judge |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, a in s["arms"].items():
        lines.append(
            f"| {arm.replace('_', ' ')} | {a['generators'] or '–'} | {a['judge_seeds']} | {a['organ']:.3f} | "
            f"{pair(a, 'gain')} | {a['lesion']:.3f} | {pair(a, 'lesion_gain')} | {a['lesions_found']:.2f} | "
            f"{a['best_steps']} / {a['stopped_steps']} | {a['seconds']:.0f} |"
        )
    if s["fraction_of_oracle_gain"] is not None:
        lines += ["", f"Synthetic arm's share of the oracle arm's gain: {s['fraction_of_oracle_gain']:.2f}."]
    lines += [
        "",
        "Rows (one per arm, generator and judge seed):",
        "",
        "```json",
        *[
            json.dumps({k: v for k, v in r.items() if k not in ("organ", "lesion", "lesion_by_seed", "has_lesion")})
            for r in rows
        ],
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "augmentation.md")
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--generator-seed", type=int, required=True)
    t.add_argument(
        "--decoder",
        choices=("normal", "spade"),
        default=notebook_parameters("quick", "02")["decoder_type"],
        help="notebook 02's decoder_type (default: the quick profile's)",
    )
    a = sub.add_parser("arms")
    a.add_argument("--run", type=Path, required=True)
    a.add_argument("--arms", default=",".join(ARMS))
    a.add_argument("--judge-seeds", default="0,1")
    a.add_argument("--judge-options", default="{}")
    a.add_argument("--generator-seed", type=int, default=0, help="the seed notebooks 02-03 of --run trained with")
    r = sub.add_parser("report")
    r.add_argument(
        "--note", default="", help="a sentence on the conditions of this run, printed under the table's header"
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.cmd == "train":
        train(args.work, args.generator_seed, args.decoder)
    elif args.cmd == "arms":
        names = args.arms.split(",")
        unknown = sorted(set(names) - set(ARMS))
        if unknown:
            raise SystemExit(f"unknown arm(s) {unknown}; choose from {ARMS}")
        arms(
            args.work,
            args.run,
            names,
            [int(s) for s in args.judge_seeds.split(",")],
            json.loads(args.judge_options),
            args.generator_seed,
        )
    else:
        write_report(args.work, args.out, lambda rows: report(rows, args.note))
        write_report(args.work, args.out.with_suffix(".json"), lambda rows: json.dumps(summary(rows), indent=1) + "\n")


if __name__ == "__main__":
    main()
