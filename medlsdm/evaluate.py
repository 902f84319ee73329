"""Evaluate a run: notebook 05 and ``medlsdm evaluate`` call the same steps.

1. :func:`synthetic_test_and_train` — synthesise from the test label maps (and, for the
   augmentation experiment, from the training label maps) into
   ``RUN/samples/eval/<setting>/{test,train}/``, reusing files already there. The real
   volumes stay in ``RUN/data/images``: real and synthetic test sets live in different
   folders and are paired only through their label maps.
2. :func:`image_quality` — paired SSIM, PSNR, RMSE, NMSE: each synthetic volume against
   the real volume of the same label map.
3. :func:`segmentation_experiment` — a segmentation network trained on the real training
   split: Dice on real training and test cases and on the synthetic test volumes (against
   their label maps); then the same network trained on real + synthetic training volumes,
   Dice on the real test cases.
4. :func:`feature_distances` — FID on 2-D slices, 3-D FID and LPIPS when local weight files
   are given; the Fréchet distance in the segmentation network's feature space always.
5. :func:`privacy_check` — is any synthetic volume closer to a training volume than every
   real unseen volume is?

:func:`evaluate_run` runs the steps and writes ``"05_evaluation"`` into ``metrics.json``;
:func:`results_tables` turns those metrics into the Markdown tables both entry points show.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .data.io import read_nifti
from .errors import DataError
from .profiles import METRICS_KEYS
from .rundir import RunDir
from .tables import format_number, markdown_table

log = logging.getLogger(__name__)

@dataclass
class Cases:
    """Volumes of one set: ``images`` ``(1, D, H, W)`` float32 in [-1, 1], ``labels`` ``(D, H, W)`` int64."""

    ids: list[str]
    images: list[np.ndarray]
    labels: list[np.ndarray]
    affines: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.ids)

    def __add__(self, other: "Cases") -> "Cases":
        return Cases(self.ids + other.ids, self.images + other.images, self.labels + other.labels,
                     self.affines + other.affines)


def read_cases(image_paths: Sequence[os.PathLike], label_paths: Sequence[os.PathLike], ids: Sequence[str]) -> Cases:
    """Read paired image / label-map NIfTI files; each pair must share its voxel grid."""
    images, labels, affines = [], [], []
    for image_path, label_path in zip(image_paths, label_paths):
        image, affine = read_nifti(image_path, kind="image")
        label, label_affine = read_nifti(label_path, kind="label")
        if image.shape != label.shape or not np.allclose(affine, label_affine, atol=1e-3):
            raise DataError(f"{image_path}: not on the grid of its label map {label_path} "
                            f"(shape {image.shape} vs {label.shape})")
        images.append(image[None].astype(np.float32))
        labels.append(label)
        affines.append(affine)
    return Cases(list(ids), images, labels, affines)


def real_cases(run: RunDir, ids: Sequence[str]) -> Cases:
    """The run's preprocessed real cases (``RUN/data/images`` and ``labels``)."""
    return read_cases([run.data / "images" / f"{c}.nii.gz" for c in ids],
                      [run.data / "labels" / f"{c}.nii.gz" for c in ids], ids)


def synthetic_folder(run: RunDir, *, scheduler: str, steps: int, guidance_scale: float, seed: int) -> Path:
    """``RUN/samples/eval/<scheduler>-<steps>-g<guidance>-s<seed>``: one folder per sampling
    setting, so files made with other settings are never mistaken for these."""
    return run.eval_samples / f"{scheduler}-{int(steps)}-g{float(guidance_scale):g}-s{int(seed)}"


def synthetic_cases(run: RunDir, pipe, ids: Sequence[str], folder: Path, *, scheduler: str, steps: int,
                    guidance_scale: float, seed: int) -> Cases:
    """Synthetic volumes ``folder/<id>_syn0.nii.gz`` from the label maps of ``ids``; the
    missing ones are synthesised first (with :func:`medlsdm.pipelines.synthesis.synthesize_files`)."""
    from .pipelines.synthesis import synthesize_files, use_scheduler

    label_paths = [run.data / "labels" / f"{c}.nii.gz" for c in ids]
    image_paths = [folder / f"{c}_syn0.nii.gz" for c in ids]
    missing = [lp for lp, ip in zip(label_paths, image_paths) if not ip.exists()]
    if missing:
        if pipe is None:
            raise DataError(f"{folder}: {len(missing)} synthetic volume(s) missing and no pipeline given")
        use_scheduler(pipe, scheduler)
        synthesize_files(pipe, missing, folder, steps=steps, guidance_scale=guidance_scale, seed=seed)
    return read_cases(image_paths, label_paths, ids)


def synthetic_test_and_train(run: RunDir, pipe, split: Mapping[str, Sequence[str]], *, n_test: int | None = None,
                             augment: bool = True, scheduler: str = "ddim", steps: int = 50,
                             guidance_scale: float = 1.0, seed: int = 0) -> tuple[Cases, Cases | None, Path]:
    """Synthetic volumes from the test label maps and (``augment``) the training ones.

    The training set uses ``seed + 1`` so its noise differs from the test set's.
    Returns ``(synthetic test, synthetic train or None, folder)``.
    """
    settings = dict(scheduler=scheduler, steps=steps, guidance_scale=guidance_scale)
    folder = synthetic_folder(run, seed=seed, **settings)
    test = synthetic_cases(run, pipe, list(split["test"])[:n_test], folder / "test", seed=seed, **settings)
    train = synthetic_cases(run, pipe, list(split["train"]), folder / "train", seed=seed + 1, **settings) if augment else None
    return test, train, folder


def image_quality(real: Cases, synthetic: Cases, data_range: float = 2.0) -> dict[str, Any]:
    """Paired image metrics (synthetic vs the real volume of the same label map), averaged
    over pairs: SSIM (Gaussian window), PSNR and RMSE with intensities in [-1, 1]
    (``data_range`` 2), NMSE ``‖syn − real‖² / ‖real‖²``. ``per_case`` keeps every value."""
    from .metrics.image import paired_metrics

    if real.ids != synthetic.ids:
        raise DataError(f"image_quality: real and synthetic cases differ: {real.ids} vs {synthetic.ids}")
    means, per_pair = paired_metrics(real.images, synthetic.images, data_range=data_range)
    return {**means, "per_case": dict(zip(real.ids, per_pair))}


@dataclass
class SegmentationResult:
    model: Any
    dice: dict[str, dict[str, Any]]


def segmentation_experiment(train: Cases, test: Cases, synthetic_test: Cases, synthetic_train: Cases | None,
                            class_names: Sequence[str], *, steps: int = 250, seed: int = 0,
                            progress: bool = True) -> SegmentationResult:
    """Train the segmentation network on the real training cases and measure Dice
    (:func:`medlsdm.evaluation.segmentation.evaluate_dice`) on ``real_train``, ``real_test`` and
    ``synthetic`` (the synthetic test volumes against their label maps); with
    ``synthetic_train``, train a second network with the same settings on real + synthetic
    training volumes and measure it on the real test cases (``augmented``)."""
    from .evaluation.segmentation import evaluate_dice
    from .training.segnet import train_segnet

    k = len(class_names)

    def fit(cases: Cases):
        return train_segnet(cases.images, cases.labels, num_classes=k, steps=steps, seed=seed, progress=progress)

    def dice(model, cases: Cases):
        return evaluate_dice(model, cases.images, cases.labels, k, class_names=class_names)

    model = fit(train)
    scores = {"real_train": dice(model, train), "real_test": dice(model, test), "synthetic": dice(model, synthetic_test)}
    augmented = None
    if synthetic_train is not None:
        augmented = fit(train + synthetic_train)
        scores["augmented"] = dice(augmented, test)
    return SegmentationResult(model, scores)


def feature_distances(real: Cases, synthetic: Cases, segnet, weights: Mapping[str, Any] | None = None,
                      slice_step: int = 1) -> dict[str, Any]:
    """Set-level distances between real and synthetic volumes.

    ``fd_seg`` (always, given two volumes per set): Fréchet distance of the segmentation network's bottleneck features
    (:func:`medlsdm.evaluation.features.segnet_feature_distance`) — not comparable to published FIDs.
    With local weight files (``weights``, see :func:`medlsdm.evaluation.features.available_feature_metrics`):
    ``fid`` per slice orientation (InceptionV3), ``fid_3d`` (MedicalNet), ``lpips`` per
    orientation (paired slices). A metric without weights is ``None`` and its reason is in
    ``skipped``.
    """
    from .evaluation.features import available_feature_metrics, fid_2d, fid_3d, lpips_slices, segnet_feature_distance

    status = available_feature_metrics(dict(weights or {}))
    if min(len(real), len(synthetic)) < 2:  # a covariance needs two samples; paired LPIPS does not
        status.update({m: "skipped (needs >= 2 volumes per set)" for m in ("fid_2d", "fid_3d", "segnet_fd")
                       if status[m] == "available"})
    out: dict[str, Any] = {"fd_seg": None, "fid": None, "fid_3d": None, "lpips": None}
    if status["segnet_fd"] == "available":
        out["fd_seg"] = segnet_feature_distance(segnet, real.images, synthetic.images)
    if status["fid_2d"] == "available":
        from .models.feature_nets.inception import load_inception

        out["fid"] = fid_2d(real.images, synthetic.images, load_inception(weights["inception"]), slice_step=slice_step)
    if status["fid_3d"] == "available":
        from .models.feature_nets.medicalnet import load_medicalnet

        out["fid_3d"] = fid_3d(real.images, synthetic.images, load_medicalnet(weights["medicalnet"]))
    if status["lpips"] == "available":
        from .models.feature_nets.lpips import load_lpips

        out["lpips"] = lpips_slices(real.images, synthetic.images, load_lpips(weights["vgg16"], weights["lpips"]),
                                            slice_step=slice_step)
    out["skipped"] = {m: s for m, s in status.items() if s != "available"}
    return out


def privacy_check(synthetic: Cases, train: Cases, held_out: Cases) -> dict[str, Any]:
    """:func:`medlsdm.metrics.privacy.nearest_neighbour_check` of the synthetic volumes against the
    real training volumes, with the real unseen (validation + test) volumes as the yardstick.

    Use synthetic volumes made from *unseen* label maps: one made from a training label map
    shares that patient's anatomy by construction and is close to it without being a copy.
    """
    from .metrics.privacy import nearest_neighbour_check

    check = nearest_neighbour_check(synthetic.images, train.images, held_out.images)
    check["flagged_ids"] = [synthetic.ids[i] for i in check["flagged"]]
    check["nearest_train_ids"] = [train.ids[i] for i in check["synthetic_nn_index"]]
    return check


def _mean_of(values: Mapping[str, float] | float | None) -> float | None:
    if values is None or isinstance(values, (int, float)):
        return values
    return float(np.mean(list(values.values())))


def evaluation_metrics(*, quality: Mapping[str, Any], segmentation: SegmentationResult, features: Mapping[str, Any],
                       privacy: Mapping[str, Any], model_info: Mapping[str, Any], settings: Mapping[str, Any],
                       seconds: float) -> dict[str, Any]:
    """The ``"05_evaluation"`` entry of ``metrics.json`` from the steps' results."""
    dice = segmentation.dice
    real_test, synthetic = dice["real_test"]["mean"], dice["synthetic"]["mean"]
    return {
        **model_info,
        "ssim": quality["ssim"], "psnr": quality["psnr"], "rmse": quality["rmse"], "nmse": quality["nmse"],
        "dice_real_train": dice["real_train"]["mean"], "dice_real_test": real_test, "dice_synthetic": synthetic,
        "dice_ratio": synthetic / real_test if real_test > 0 else math.nan,
        "dice_augmented": dice["augmented"]["mean"] if "augmented" in dice else None,
        "dice_per_class": {name: d["per_class"] for name, d in dice.items()},
        "fd_seg": features["fd_seg"], "fid": features["fid"], "fid_3d": features["fid_3d"], "lpips": features["lpips"],
        "skipped": features["skipped"],
        "privacy_flagged": privacy["n_flagged"], "privacy_flagged_ids": privacy["flagged_ids"],
        "privacy_threshold": privacy["threshold"],
        "privacy_min_synthetic_distance": float(min(privacy["synthetic_nn_distance"])),
        "n_test": len(quality["per_case"]), "settings": dict(settings), "seconds": round(float(seconds), 2),
    }


def model_info(run: RunDir, pipe=None) -> dict[str, Any]:
    """Dataset, decoder and VQ-GAN channels of a run (the first columns of the paper's table)."""
    from .data.prepare import load_manifest

    manifest = load_manifest(run.data)
    info = {"dataset": manifest.get("dataset", "?"), "decoder": "?", "channels": "?"}
    if pipe is not None:
        cfg = pipe.vqgan.config
        info.update(decoder=cfg.decoder_type, channels="-".join(str(c) for c in cfg.channels))
    return info


def results_tables(m: Mapping[str, Any]) -> dict[str, str]:
    """Markdown tables of a ``"05_evaluation"`` entry: ``quality`` (the paper's format: dataset,
    decoder, #channels, FID, 3D-FID, LPIPS, SSIM, RMSE, PSNR; FID and LPIPS averaged over the
    three slice orientations), ``dice`` (per class: real train, real test, synthetic,
    augmented) and ``summary`` (Dice ratio, feature distance, privacy)."""
    def fmt(value, digits: int = 4) -> str:
        return format_number(value, digits, missing="skipped")

    quality = markdown_table(
        ["dataset", "decoder", "#channels", "FID ↓", "3D-FID ↓", "LPIPS ↓", "SSIM ↑", "RMSE ↓", "PSNR ↑"],
        [[m["dataset"], m["decoder"], m["channels"], fmt(_mean_of(m["fid"])), fmt(m["fid_3d"]),
          fmt(_mean_of(m["lpips"])), fmt(m["ssim"]), fmt(m["rmse"]), fmt(m["psnr"])]])
    columns = [c for c in ("real_train", "real_test", "synthetic", "augmented") if c in m["dice_per_class"]]
    classes = list(m["dice_per_class"]["real_test"])
    rows = [[name] + [fmt(m["dice_per_class"][c][name], 3) for c in columns] for name in classes]
    rows.append(["**mean**"] + [fmt(m[f"dice_{c}"], 3) for c in columns])
    dice = markdown_table(["class"] + [c.replace("_", " ") + (" (real test)" if c == "augmented" else "") for c in columns], rows)
    summary = markdown_table(["measure", "value"], [
        ["Dice synthetic / real test", fmt(m["dice_ratio"], 3)],
        ["Dice real + synthetic training (real test)", fmt(m["dice_augmented"], 3)],
        ["Fréchet distance, segmentation features (not an FID)", fmt(m["fd_seg"])],
        ["synthetic volumes flagged as possible copies", f"{m['privacy_flagged']} of {m['n_test']}"],
    ])
    return {"quality": quality, "dice": dice, "summary": summary}


def evaluate_run(run_dir: str | os.PathLike, *, scheduler: str = "ddim", steps: int = 50, guidance_scale: float = 1.0,
                 seed: int = 0, n_test: int | None = None, segnet_steps: int = 250, augment: bool = True,
                 weights: Mapping[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """All evaluation steps on a run; writes and returns ``metrics.json["05_evaluation"]``.

    Needs notebooks 01 (data) and 03 (pipeline) to have run; synthetic volumes already in
    ``RUN/samples/eval/<setting>/`` (e.g. from notebook 05) are reused.
    """
    from .data.prepare import load_manifest
    from .data.splits import load_split
    from .evaluation.features import available_feature_metrics
    from .pipelines.loading import load_pipeline

    start = time.perf_counter()
    available_feature_metrics(dict(weights or {}))  # a mistyped weight path fails before any work
    run = RunDir(run_dir)
    class_names = load_manifest(run.data)["classes"]
    split = load_split(run.split_path)
    pipe = load_pipeline(run.root)
    settings = dict(scheduler=scheduler, steps=steps, guidance_scale=guidance_scale, seed=seed)
    syn_test, syn_train, _ = synthetic_test_and_train(run, pipe, split, n_test=n_test, augment=augment, **settings)
    train, test = real_cases(run, split["train"]), real_cases(run, syn_test.ids)
    held_out = real_cases(run, list(split["val"]) + list(split["test"]))
    quality = image_quality(test, syn_test)
    seg = segmentation_experiment(train, test, syn_test, syn_train, class_names, steps=segnet_steps, seed=seed,
                                  progress=progress)
    features = feature_distances(test, syn_test, seg.model, weights)
    privacy = privacy_check(syn_test, train, held_out)
    result = evaluation_metrics(quality=quality, segmentation=seg, features=features, privacy=privacy,
                                model_info=model_info(run, pipe),
                                settings={**settings, "segnet_steps": segnet_steps, "augment": augment},
                                seconds=time.perf_counter() - start)
    run.update_metrics(METRICS_KEYS["05"], result)
    return result
