"""Benchmark: which autoencoder keeps texture and thin structures on the quick budget? (quality)

Trains notebook 02's VQ-GAN with each option below and reports, on held-out blocks:

- PSNR / SSIM inside the labelled region (the body) beside *painting + the pooled residual*,
  the training-free baseline with the same side information and compression;
- texture, reconstruction over original (:mod:`medlsdm.metrics.texture`): the noise level in
  homogeneous classes and the in-plane power above half Nyquist; a blur scores far below 1;
- thin bright structures: the bone's contrast against its surroundings kept in the thin bone
  (bone voxels that a 1-voxel erosion removes: ribs, cortex), reconstruction over original;
- the latent ablation (own − another case's codes, dB): the decoder still needs its latent;
- training seconds (comparable only between rows of one run on otherwise idle cores).

Two datasets: ``phantom`` (the quick torso phantom of notebook 01, its validation split) and
``head`` (real anatomy: the ch2 head T1 with its 116-region AAL map from Debian's
``mricron-data``, cut into 32 × 96 × 96 mm tiles and read through the generic ``nifti``
adapter at 2 mm; the tiles of one axial slab are held out, the rest train).

    python benchmarks/bench_autoencoder_realism.py --work /tmp/aer train --dataset phantom --option l1
    python benchmarks/bench_autoencoder_realism.py --work /tmp/aer report   # benchmarks/results/autoencoder_realism.md

Each ``train`` appends a row to ``WORK/rows.jsonl`` and keeps the held-out reconstructions,
so rows can be run one at a time (or split between machines) and reported together.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker import append_row, write_report  # noqa: E402  (benchmarks/worker.py)

#: The options, as notebook 02 parameters.
OPTIONS = {
    "l1": dict(gan_weight_2d=0.0, gan_weight_3d=0.0, steps=600),
    "patchgan-1500": dict(gan_weight_2d=0.1, gan_weight_3d=0.1, disc_start=500, steps=1500, disc_channels=64),
    "patchgan-0.05-1500": dict(gan_weight_2d=0.05, gan_weight_3d=0.05, disc_start=500, steps=1500, disc_channels=64),
    "patchgan-d16-1500": dict(gan_weight_2d=0.1, gan_weight_3d=0.1, disc_start=500, steps=1500, disc_channels=16),
    "patchgan-d16-1000": dict(gan_weight_2d=0.1, gan_weight_3d=0.1, disc_start=300, steps=1000, disc_channels=16),
    "patchgan-d16-1200": dict(gan_weight_2d=0.1, gan_weight_3d=0.1, disc_start=400, steps=1200, disc_channels=16),
    "patchgan-d16-1500-bf16": dict(
        gan_weight_2d=0.1, gan_weight_3d=0.1, disc_start=500, steps=1500, disc_channels=16, mixed_precision="bf16"
    ),
}
HEAD = Path("/usr/share/mricron/templates")
HEAD_TILE_MM = (32, 96, 96)  # (z, y, x) of one tile
HEAD_SPACING = [2.0, 2.0, 2.0]
HEAD_HELD_OUT_SLAB = 2  # axial slab whose tiles are held out (of 5)


def train_settings(option: str) -> dict:
    """``train_vqgan`` keywords of an option: the quick profile's notebook-02 settings with the option's changes."""
    from medlsdm.profiles import PROFILES

    p = {**PROFILES["quick"]["02"], **OPTIONS[option]}
    p.pop("compare_decoder", None)
    return p


def phantom_data(work: Path) -> tuple[Path, dict]:
    from medlsdm.data.phantom import make_phantom
    from medlsdm.data.prepare import prepare_dataset
    from medlsdm.data.splits import load_split
    from medlsdm.profiles import PROFILES

    data = work / "phantom" / "data"
    if not (data / "split.json").is_file():
        q01 = PROFILES["quick"]["01"]
        make_phantom(q01["dataset"], work / "phantom" / "raw", q01["n_cases"], seed=0)
        prepare_dataset(
            q01["dataset"],
            work / "phantom" / "raw",
            data,
            spacing=q01["spacing"],
            block_shape=q01["block_shape"],
            n_cases=q01["n_cases"],
        )
    split = load_split(data / "split.json")
    return data, {"train": split["train"], "held_out": split["val"]}


def head_data(work: Path) -> tuple[Path, dict]:
    """The ch2 head T1 and its AAL map, tiled into NIfTI cases and read by the ``nifti`` adapter."""
    import nibabel as nib

    from medlsdm.data.prepare import load_manifest, prepare_dataset

    data = work / "head" / "data"
    raw = work / "head" / "raw"
    if not (data / "manifest.json").is_file():
        image, labels = nib.load(HEAD / "ch2.nii.gz"), nib.load(HEAD / "aal.nii.gz")
        x, y = np.asarray(image.dataobj, np.float32), np.asarray(labels.dataobj, np.int16)
        tz, ty, tx = HEAD_TILE_MM  # 1 mm voxels, RAS array axes (x, y, z)
        for folder in ("images", "labels"):
            (raw / folder).mkdir(parents=True, exist_ok=True)
        for k in range(x.shape[2] // tz):
            for j in np.linspace(0, x.shape[1] - ty, 3).astype(int):
                for i in np.linspace(0, x.shape[0] - tx, 2).astype(int):
                    box = np.s_[i : i + tx, j : j + ty, k * tz : (k + 1) * tz]
                    if (y[box] > 0).mean() < 0.05:
                        continue
                    affine = image.affine @ np.array([[1, 0, 0, i], [0, 1, 0, j], [0, 0, 1, k * tz], [0, 0, 0, 1]])
                    name = f"slab{k}_y{j:03d}_x{i:03d}.nii.gz"
                    nib.save(nib.Nifti1Image(x[box], affine), raw / "images" / name)
                    nib.save(nib.Nifti1Image(y[box], affine), raw / "labels" / name)
        shape = [int(round(t / s)) for t, s in zip(HEAD_TILE_MM, HEAD_SPACING)]
        prepare_dataset("nifti", raw, data, spacing=HEAD_SPACING, block_shape=shape, modality="MR", num_classes=117)
    manifest = load_manifest(data)
    ids = sorted(c.case_id for c in manifest.cases)
    held = [c for c in ids if c.startswith(f"slab{HEAD_HELD_OUT_SLAB}_")]
    return data, {"train": [c for c in ids if c not in held], "held_out": held}


DATASETS = {"phantom": phantom_data, "head": head_data}


def thin_bone_contrast(recon: np.ndarray, original: np.ndarray, labels: np.ndarray, bone: int) -> float:
    """Contrast of thin bone against the tissue around it, reconstruction over original.

    Thin bone: bone voxels that a one-voxel erosion removes; surroundings: the non-bone body
    voxels within one voxel of the bone. 1: the contrast is kept; 0: the bone is erased."""
    from scipy import ndimage

    ratios = []
    for r, x, y in zip(recon[:, 0], original[:, 0], labels):
        b = y == bone
        thin = b & ~ndimage.binary_erosion(b)
        around = ndimage.binary_dilation(b) & ~b & (y > 0)
        if thin.sum() < 10 or around.sum() < 10:
            continue
        ratios.append((r[thin].mean() - r[around].mean()) / (x[thin].mean() - x[around].mean()))
    return float(np.mean(ratios)) if ratios else float("nan")


def train(work: Path, dataset: str, option: str, seed: int) -> dict:
    import torch

    from medlsdm.data.prepare import load_manifest
    from medlsdm.data.store import CaseStore, stack_cases
    from medlsdm.evaluation.reconstruction import body_masks, latent_ablation, reconstruct, reconstruction_vs_baselines
    from medlsdm.metrics.conditional import class_means
    from medlsdm.training.vqgan import load_vqgan, train_vqgan

    data, split = DATASETS[dataset](work)
    classes = load_manifest(data).classes
    out = work / "runs" / f"{dataset}-{option}-{seed}"
    with CaseStore(data / "cases.h5") as store:
        t0 = time.perf_counter()
        train_vqgan(
            out,
            store=store,
            split={"train": split["train"], "val": []},
            num_classes=len(classes),
            progress=False,
            resume=False,
            seed=seed,
            **train_settings(option),
        )
        seconds = time.perf_counter() - t0
        train_x, train_y, _ = stack_cases(store, split["train"])
        x, y, _ = stack_cases(store, split["held_out"])
    model = load_vqgan(out)
    means = class_means(train_x, train_y, len(classes))
    # a class no training block holds (AAL regions of the held-out slab only) is painted with the mean of the
    # labelled voxels
    means[np.isnan(means)] = train_x[:, 0][train_y > 0].mean()
    with torch.no_grad():
        table = reconstruction_vs_baselines(model, x, y, means)
        ablation = latent_ablation(model, x, y, masks=body_masks(y), seed=seed)
        recon = reconstruct(model, x, y).images
    np.savez_compressed(out / "held_out.npz", original=x, recon=recon, labels=y)
    row = {
        "dataset": dataset,
        "option": option,
        "seed": seed,
        "settings": OPTIONS[option],
        "train_seconds": round(seconds, 1),
        "n_train": len(split["train"]),
        "n_held_out": len(split["held_out"]),
        "body": {m: {k: r[k] for k in ("psnr", "ssim")} for m, r in table.items()},
        "ablation_own_minus_other": ablation["own_minus_other"],
        "run": str(out),
    }
    append_row(work, row)
    return row


def texture_and_bone(row: dict) -> dict:
    """Texture ratios and thin-bone contrast of a row's held-out reconstructions (reconstruction over original)."""
    from medlsdm.data.prepare import load_manifest
    from medlsdm.evaluation.oracle import texture_classes
    from medlsdm.metrics.texture import texture_ratios

    data = np.load(Path(row["run"]) / "held_out.npz")
    x, recon, y = data["original"], data["recon"], data["labels"]
    manifest = load_manifest(Path(row["run"]).parents[1] / row["dataset"] / "data")
    classes = manifest.classes
    out = texture_ratios(list(recon), list(y), list(x), list(y), texture_classes(classes, manifest.dataset))
    out["thin_bone"] = thin_bone_contrast(recon, x, y, classes.index("bone")) if "bone" in classes else float("nan")
    return out


def report(rows: list[dict]) -> str:
    import torch

    lines = [
        "# Which autoencoder keeps texture and thin structures on the quick budget?",
        "",
        "Written by `benchmarks/bench_autoencoder_realism.py` on "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}: "
        f"{platform.machine()}, torch {torch.__version__}. Held-out blocks: the phantom's validation split; the head's "
        f"axial slab {HEAD_HELD_OUT_SLAB} (ch2 T1 + AAL, {HEAD_SPACING[0]:g} mm, tiles of {HEAD_TILE_MM} mm, the "
        "other slabs "
        "train). PSNR / SSIM inside the labelled region; noise (in the homogeneous classes of "
        "`medlsdm.data.phantom.oracle.TEXTURE_CLASSES`; the head: every labelled region) and HF power (in-plane, "
        "above half "
        "Nyquist, inside the labelled region): reconstruction over original (1 keeps the texture; a blur is far "
        "below); thin bone: contrast of one-voxel-thin bone against its "
        "surroundings, reconstruction over original; ablation: own − another case's codes (dB). Train seconds "
        "are comparable only between rows run on otherwise idle cores.",
        "",
        "| dataset | option | seed | steps | train s | PSNR | SSIM | painting + pooled residual PSNR / SSIM | beats "
        "it on both | "
        "noise ratio | HF power ratio | thin bone | ablation dB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = texture_and_bone(r)
        b, base = r["body"]["VQ-GAN"], r["body"]["painting + pooled residual"]
        both = b["psnr"] > base["psnr"] and b["ssim"] > base["ssim"]
        lines.append(
            f"| {r['dataset']} | {r['option']} | {r['seed']} | {r['settings']['steps']} | {r['train_seconds']} | "
            f"{b['psnr']:.2f} | {b['ssim']:.3f} | {base['psnr']:.2f} / {base['ssim']:.3f} | "
            f"{'yes' if both else 'no'} | "
            f"{t['noise_ratio']:.2f} | {t['hf_power_ratio']:.2f} | {t['thin_bone']:.2f} | "
            f"{r['ablation_own_minus_other']:.1f} |"
        )
    lines += ["", "Options (notebook 02 parameters over the quick profile's):", ""]
    lines += [f"- `{name}`: {settings}" for name, settings in OPTIONS.items()]
    lines += ["", "Raw numbers:", "", "```json", json.dumps(rows, indent=1), "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="working folder (data, models, rows.jsonl)")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one option on one dataset and append its row")
    t.add_argument("--dataset", choices=list(DATASETS), default="phantom")
    t.add_argument("--option", choices=list(OPTIONS), required=True)
    t.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("report", help="write the report from WORK/rows.jsonl")
    r.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "autoencoder_realism.md")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.command == "train":
        train(args.work, args.dataset, args.option, args.seed)
    else:
        write_report(args.work, args.out, report)


if __name__ == "__main__":
    main()
