"""Benchmark: which VQ-GAN decoder needs its latent? (quality, not speed)

On the quick torso phantom (notebook 01's quick settings), trains the VQ-GAN with each
decoder option at the quick profile's settings and reports, on the *validation* cases:

- the latent ablation (PSNR inside the body when decoding with the case's own codes,
  another case's codes, random codes): a decoder that ignores its latent scores the same;
- PSNR / SSIM inside the body beside the training-free baselines with the same side
  information (average pool; label painting; painting + the pooled residual).

Options: ``normal`` (GroupNorm decoder, latent only), ``spade`` (Med-LSDM: SPADE norms read
the label map everywhere), ``spade-dropout`` (SPADE, trained with 50 % of the samples'
label maps dropped, :func:`medlsdm.training.vqgan.drop_labels`). Several seeds per option.

    python benchmarks/bench_decoders.py                    # writes benchmarks/results/decoders.md
    python benchmarks/bench_decoders.py --steps 20 --seeds 0   # smoke check

Run it when nothing else uses the CPU (times are reported beside the step counts).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OPTIONS = {
    "normal": dict(decoder_type="normal"),
    "spade": dict(decoder_type="spade"),
    "spade-dropout": dict(decoder_type="spade", label_dropout=0.5),
}


def run(steps: int, seeds: list[int], options: list[str], work: Path) -> list[dict]:
    import torch

    from medlsdm.data.phantom import make_phantom
    from medlsdm.data.prepare import prepare_dataset
    from medlsdm.data.splits import load_split
    from medlsdm.data.store import CaseStore, stack_cases
    from medlsdm.evaluation.reconstruction import body_masks, latent_ablation, reconstruction_vs_baselines
    from medlsdm.metrics.conditional import class_means
    from medlsdm.profiles import PROFILES
    from medlsdm.training.vqgan import load_vqgan, train_vqgan

    q01, q02 = PROFILES["quick"]["01"], dict(PROFILES["quick"]["02"])
    for key in ("decoder_type", "compare_decoder", "label_dropout"):
        q02.pop(key, None)
    make_phantom(q01["dataset"], work / "raw", q01["n_cases"], seed=0)
    manifest = prepare_dataset(
        q01["dataset"],
        work / "raw",
        work / "data",
        spacing=q01["spacing"],
        block_shape=q01["block_shape"],
        n_cases=q01["n_cases"],
    )
    split = load_split(work / "data" / "split.json")
    rows = []
    with CaseStore(work / "data" / "cases.h5") as store:
        train_x, train_y, _ = stack_cases(store, split["train"])
        val_x, val_y, _ = stack_cases(store, split["val"])
        means = class_means(list(train_x), list(train_y), num_classes=len(manifest.classes))
        for name in options:
            for seed in seeds:
                run_dir = work / f"{name}-{seed}"
                t0 = time.perf_counter()
                train_vqgan(
                    run_dir,
                    store=store,
                    split=split,
                    num_classes=len(manifest.classes),
                    progress=False,
                    **{**q02, "steps": steps, "seed": seed},
                    **OPTIONS[name],
                )
                seconds = time.perf_counter() - t0
                model = load_vqgan(run_dir)
                with torch.no_grad():
                    ablation = latent_ablation(model, val_x, val_y, masks=body_masks(val_y), seed=seed)
                    table = reconstruction_vs_baselines(model, val_x, val_y, means)
                rows.append(
                    {
                        "option": name,
                        "seed": seed,
                        "steps": steps,
                        "train_seconds": round(seconds, 1),
                        "ablation": {k: ablation[k] for k in ("own", "other", "random", "own_minus_other")},
                        "body": {m: {k: r[k] for k in ("psnr", "ssim")} for m, r in table.items()},
                        "n_val": len(split["val"]),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


def report(rows: list[dict]) -> str:
    import torch

    lines = [
        "# Which decoder needs its latent?",
        "",
        f"Written by `benchmarks/bench_decoders.py` on {datetime.datetime.now().isoformat(timespec='seconds')}: "
        f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads.",
        "",
        "Quick torso phantom, quick VQ-GAN settings; numbers on the validation cases, inside the body "
        "(label > 0). Ablation: PSNR decoding each case with its own codes, another case's codes, random codes.",
        "",
        "| option | seed | steps | train s | own dB | other dB | random dB | own − other dB | VQ-GAN dB | SSIM | "
        "avg-pool dB | painting dB | painting + pooled residual dB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a, b = r["ablation"], r["body"]
        lines.append(
            f"| {r['option']} | {r['seed']} | {r['steps']} | {r['train_seconds']} | {a['own']:.2f} | "
            f"{a['other']:.2f} | "
            f"{a['random']:.2f} | {a['own_minus_other']:.2f} | {b['VQ-GAN']['psnr']:.2f} | {b['VQ-GAN']['ssim']:.3f} | "
            f"{b['average-pool']['psnr']:.2f} | {b['painting']['psnr']:.2f} | "
            f"{b['painting + pooled residual']['psnr']:.2f} |"
        )
    lines += ["", "Raw numbers:", "", "```json", json.dumps(rows, indent=1), "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="VQ-GAN steps (default: the quick profile's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--options", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "decoders.md")
    args = parser.parse_args()
    from medlsdm.atomic import atomic_path
    from medlsdm.profiles import PROFILES

    steps = args.steps or PROFILES["quick"]["02"]["steps"]
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(steps, args.seeds, args.options, Path(tmp))
    with atomic_path(args.out) as tmp_out:
        Path(tmp_out).write_text(report(rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
