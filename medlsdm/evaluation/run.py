"""Evaluate a run: notebook 05 and ``medlsdm evaluate`` call the same steps.

1. :func:`synthetic_sets` — synthesise from the test label maps, from training label maps
   (memorisation check) and from *new* anatomies (augmentation) into
   ``RUN/samples/eval/<setting>/{test,train,new}/``, reusing files already there when the same
   pipeline weights made them (:func:`pipeline_digest`, kept in ``<setting>/pipeline.json``). The real
   volumes stay in ``RUN/data/images``: real and synthetic sets are paired only through
   their label maps.
2. :func:`image_quality` — paired SSIM, PSNR, RMSE, NMSE per case.
3. :func:`segmentation_experiment` — the judge: a segmentation network per seed trained on
   the real training split, selected on validation; Dice per case on real and synthetic test
   volumes, organs and lesions apart.
4. :func:`medlsdm.evaluation.augmentation.augmentation_experiment` — real-small, + oracle renders of
   new anatomies, + those through the autoencoder, + synthetic volumes of them, real-all: paired
   gains on the real test cases with hierarchical CIs.
5. :func:`memorisation` — nearest-training distances with a positive and a negative control.
6. :func:`distances` — KID and FRD beside real-vs-real and oracle-vs-real references;
   :func:`feature_distances` — FID, 3-D FID, LPIPS with local weights.
7. :func:`paper_conventions` — the numbers as the reference code computed them, beside ours.

Only the test split measures; every choice (early stopping, thresholds) uses validation or
the controls. :func:`evaluate_run` runs the steps and writes ``"05_evaluation"`` into
``metrics.json``; :func:`results_tables` turns it into the Markdown tables both entry points show.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..atomic import read_json, write_json
from ..data.io import write_nifti
from ..data.phantom.oracle import new_anatomies, oracle_samples
from ..data.prepare import load_manifest
from ..data.splits import load_split
from ..errors import ConfigError, DataError
from ..metrics.image import paired_metrics
from ..metrics.paper_conventions import paper_convention_table
from ..models.feature_nets.inception import load_inception
from ..models.feature_nets.lpips import load_lpips
from ..models.feature_nets.medicalnet import load_medicalnet
from ..pipelines.loading import load_pipeline
from ..pipelines.synthesis import synthesize_files, use_scheduler
from ..profiles import METRICS_KEYS
from ..rundir import RunDir
from ..settings import EvaluationSettings, with_defaults
from ..training.checkpoint import json_digest, module_digest
from .augmentation import augmentation_experiment, augmentation_extras, lesion_arm_skipped, lesion_edits
from .cases import Cases, dice_over_seeds, read_cases, real_cases, train_judges
from .controls import distances_with_references, memorisation_controls
from .features import available_feature_metrics, fid_2d, fid_3d, lpips_slices, segnet_feature_distance, segnet_features
from .segmentation import predict
from .summary import evaluation_metrics, nan_mean

log = logging.getLogger(__name__)


def synthetic_folder(run: RunDir, *, scheduler: str, steps: int, guidance_scale: float, seed: int) -> Path:
    """``RUN/samples/eval/<scheduler>-<steps>-g<guidance>-s<seed>``: one folder per sampling
    setting, so files made with other settings are never mistaken for these."""
    return run.eval_samples / f"{scheduler}-{int(steps)}-g{float(guidance_scale):g}-s{int(seed)}"


def pipeline_digest(pipe) -> str:
    """sha256 of what a pipeline samples with: its VQ-GAN and UNet (configs and weights), its
    training schedule and the spacing / block shape it records. Keys the synthetic-volume cache."""

    schedule = {
        k: pipe.scheduler.config.get(k)
        for k in ("prediction_type", "num_train_timesteps", "beta_schedule", "beta_start", "beta_end")
    }
    return json_digest(
        [module_digest(pipe.vqgan, pipe.unet), schedule, {k: pipe.config.get(k) for k in ("spacing", "block_shape")}]
    )


def match_pipeline(folder: Path, digest: str) -> None:
    """Remove the synthetic volumes ``folder/*/<id>_syn*.nii.gz`` that other pipeline weights (or
    unknown ones: no ``folder/pipeline.json``) made, and record ``digest`` as their maker."""
    stamp = folder / "pipeline.json"
    old = read_json(stamp).get("pipeline_digest") if stamp.is_file() else None
    if old == digest:
        return
    stale = sorted(folder.glob("*/*_syn*.nii.gz"))
    if stale:
        log.warning(
            "%s: %d synthetic volume(s) made by other pipeline weights (%s, now %s): synthesised afresh",
            folder,
            len(stale),
            (old or "unknown")[:12],
            digest[:12],
        )
    for path in stale:
        path.unlink()
    write_json(stamp, {"pipeline_digest": digest})


def synthetic_cases(
    run: RunDir,
    pipe,
    ids: Sequence[str],
    folder: Path,
    *,
    scheduler: str,
    steps: int,
    guidance_scale: float,
    seed: int,
    label_dir: Path | None = None,
) -> Cases:
    """Synthetic volumes ``folder/<id>_syn0.nii.gz`` from the label maps ``label_dir/<id>.nii.gz``
    (default ``RUN/data/labels``); the missing ones are synthesised first (with
    :func:`medlsdm.pipelines.synthesis.synthesize_files`)."""

    label_dir = run.data / "labels" if label_dir is None else Path(label_dir)
    label_paths = [label_dir / f"{c}.nii.gz" for c in ids]
    image_paths = [folder / f"{c}_syn0.nii.gz" for c in ids]
    missing = [lp for lp, ip in zip(label_paths, image_paths) if not ip.exists()]
    if missing:
        if pipe is None:
            raise DataError(f"{folder}: {len(missing)} synthetic volume(s) missing and no pipeline given")
        use_scheduler(pipe, scheduler)
        synthesize_files(pipe, missing, folder, steps=steps, guidance_scale=guidance_scale, seed=seed)
    return read_cases(image_paths, label_paths, ids)


def new_anatomy_labels(run: RunDir, n: int) -> tuple[list[str], Path] | None:
    """``n`` new anatomies (:func:`medlsdm.data.phantom.oracle.new_anatomies`): label maps in
    ``RUN/samples/eval/new_anatomies/<id>.nii.gz`` and their oracle renders in ``…/oracle/<id>.nii.gz``,
    written once for the run's data (the folder records a digest of ``manifest.json``; other data
    rewrites it); ``None`` on real data (no phantom)."""

    folder = run.eval_samples / "new_anatomies"
    stamp, digest = folder / "data.json", json_digest(read_json(run.manifest_path))
    if stamp.is_file() and read_json(stamp).get("manifest_digest") != digest:
        log.warning("%s: made from other data (manifest changed): written afresh", folder)
        for path in sorted(folder.glob("*.nii.gz")) + sorted(folder.glob("oracle/*.nii.gz")):
            path.unlink()
    try:
        new = new_anatomies(run.data, n)
    except ConfigError as err:
        log.warning("augmentation with new anatomies skipped: %s", err)
        return None
    for cid, image, label, affine in zip(*new):
        if not (folder / f"{cid}.nii.gz").exists():
            write_nifti(folder / f"{cid}.nii.gz", label, affine, kind="label")
        if not (folder / "oracle" / f"{cid}.nii.gz").exists():
            write_nifti(folder / "oracle" / f"{cid}.nii.gz", image[0], affine, kind="image")
    write_json(stamp, {"manifest_digest": digest})
    return new.ids, folder


def synthetic_sets(
    run: RunDir,
    pipe,
    split: Mapping[str, Sequence[str]],
    *,
    n_test: int | None = None,
    n_train_maps: int | None = None,
    n_new: int = 0,
    scheduler: str = "ddim",
    steps: int = 50,
    guidance_scale: float = 1.0,
    seed: int = 0,
) -> tuple[dict[str, Cases | None], Path]:
    """Synthetic volumes in ``folder = synthetic_folder(...)``: ``test`` from the first ``n_test``
    test label maps (all: ``None``), ``train`` from the first ``n_train_maps`` training label maps
    (for the memorisation check; all: ``None``), ``new`` from ``n_new`` new anatomies (for the
    augmentation experiment; ``None`` when ``n_new`` is 0 or the run is not a phantom). Seeds
    ``seed``, ``seed + 1``, ``seed + 2``, so their noise differs. Volumes that other pipeline
    weights made are synthesised afresh (:func:`match_pipeline`); with ``pipe=None`` the files
    there are used as they are. Returns ``(sets, folder)``.
    """
    settings = dict(scheduler=scheduler, steps=steps, guidance_scale=guidance_scale)
    folder = synthetic_folder(run, seed=seed, **settings)
    if pipe is not None:
        match_pipeline(folder, pipeline_digest(pipe))
    sets: dict[str, Cases | None] = {
        "test": synthetic_cases(run, pipe, list(split["test"])[:n_test], folder / "test", seed=seed, **settings),
        "train": synthetic_cases(
            run, pipe, list(split["train"])[:n_train_maps], folder / "train", seed=seed + 1, **settings
        ),
        "new": None,
    }
    new = new_anatomy_labels(run, n_new) if n_new else None
    if new is not None:
        sets["new"] = synthetic_cases(run, pipe, new[0], folder / "new", seed=seed + 2, label_dir=new[1], **settings)
    return sets, folder


def image_quality(real: Cases, synthetic: Cases, data_range: float = 2.0) -> dict[str, Any]:
    """Paired image metrics (synthetic vs the real volume of the same label map), averaged
    over pairs: SSIM (Gaussian window), PSNR and RMSE with intensities in [-1, 1]
    (``data_range`` 2), NMSE ``‖syn − real‖² / ‖real‖²``. ``per_case`` keeps every value."""

    if real.ids != synthetic.ids:
        raise DataError(f"image_quality: real and synthetic cases differ: {real.ids} vs {synthetic.ids}")
    means, per_pair = paired_metrics(real.images, synthetic.images, data_range=data_range)
    return {**means, "per_case": dict(zip(real.ids, per_pair))}


@dataclass
class SegmentationResult:
    """The judge: ``fits`` (one :class:`~medlsdm.training.judge.JudgeFit` per seed, trained on all
    real training cases) and ``dice`` (set name → :func:`dice_over_seeds`)."""

    fits: list
    dice: dict[str, dict[str, Any]]

    @property
    def models(self) -> list:
        """The judges' networks, one per seed."""
        return [f.model for f in self.fits]

    def summary(self) -> dict[str, Any]:
        """``metrics.json``'s ``judge``: the network, its organ and lesion Dice and per-lesion
        detection rate on the real test cases (mean over seeds), and where early stopping chose
        and stopped each seed."""
        real = self.dice["real_test"]
        total = sum(real["lesions_total"])
        return {
            "network": self.fits[0].network_name,
            "dice_real_test": nan_mean(real["organ"]),
            "lesion_dice_real_test": nan_mean(real["lesion"]),
            "lesion_detection_rate": sum(real["lesions_found"]) / total if total else math.nan,
            "lesions_per_seed": int(real["lesions_total"][0]) if real["lesions_total"] else 0,
            "best_steps": [f.best_step for f in self.fits],
            "stopped_steps": [f.stopped_step for f in self.fits],
            "max_steps": self.fits[0].max_steps,
            "seconds": [round(f.seconds, 1) for f in self.fits],
        }


def segmentation_experiment(
    train: Cases,
    val: Cases,
    test: Cases,
    synthetic_test: Cases,
    class_names: Sequence[str],
    *,
    seeds: Sequence[int] = (0, 1),
    options: Mapping[str, Any] | None = None,
    oracle_test: Cases | None = None,
    progress: bool = True,
) -> SegmentationResult:
    """Train the judge on the real training cases, once per seed, each stopped early on the
    validation cases; Dice on the real test volumes, on the synthetic volumes made from the same
    label maps and (on phantoms, ``oracle_test``) on oracle re-renders of them: the Dice a perfect
    generator would get. The test cases are used for nothing else."""
    fits = train_judges(train, val, len(class_names), seeds=seeds, options=options or {}, progress=progress)
    models = [f.model for f in fits]
    sets = {"real_test": test, "synthetic": synthetic_test, **({"oracle": oracle_test} if oracle_test else {})}
    return SegmentationResult(fits, {name: dice_over_seeds(models, cases, class_names) for name, cases in sets.items()})


def feature_distances(
    real: Cases, synthetic: Cases, segnet, weights: Mapping[str, Any] | None = None, slice_step: int = 1
) -> dict[str, Any]:
    """FID on 2-D slices (per orientation, InceptionV3), 3-D FID (MedicalNet) and LPIPS (per
    orientation, paired slices) when local weight files are given (``weights``, see
    :func:`medlsdm.evaluation.features.available_feature_metrics`); a metric without weights
    is ``None`` and its reason is in ``skipped``. ``fd_seg``: the Fréchet distance of the
    segmentation network's bottleneck features (not comparable to published FIDs)."""

    status = available_feature_metrics(dict(weights or {}))
    if min(len(real), len(synthetic)) < 2:  # a covariance needs two samples; paired LPIPS does not
        status.update(
            {
                m: "skipped (needs >= 2 volumes per set)"
                for m in ("fid_2d", "fid_3d", "segnet_fd")
                if status[m] == "available"
            }
        )
    out: dict[str, Any] = {"fd_seg": None, "fid": None, "fid_3d": None, "lpips": None}
    if status["segnet_fd"] == "available":
        out["fd_seg"] = segnet_feature_distance(segnet, real.images, synthetic.images)
    if status["fid_2d"] == "available":
        out["fid"] = fid_2d(real.images, synthetic.images, load_inception(weights["inception"]), slice_step=slice_step)
    if status["fid_3d"] == "available":
        out["fid_3d"] = fid_3d(real.images, synthetic.images, load_medicalnet(weights["medicalnet"]))
    if status["lpips"] == "available":
        out["lpips"] = lpips_slices(
            real.images, synthetic.images, load_lpips(weights["vgg16"], weights["lpips"]), slice_step=slice_step
        )
    out["skipped"] = {m: s for m, s in status.items() if s != "available"}
    return out


def memorisation(
    run: RunDir,
    train: Cases,
    synthetic: Mapping[str, Cases],
    held_out: Cases,
    *,
    seed: int = 0,
    negative_control: str = "oracle",
) -> dict[str, Any]:
    """:func:`medlsdm.evaluation.controls.memorisation_controls` on the run's cases: synthetic
    volumes from training and from test label maps judged against a threshold that the
    controls set (copies flagged, oracle re-renders — or, on real data or with
    ``negative_control="held_out"``, held-out volumes — not)."""

    sets = {name: cases.images for name, cases in synthetic.items() if cases is not None and len(cases)}
    return memorisation_controls(
        run.data, train.ids, train.images, sets, held_out.images, seed=seed, negative_control=negative_control
    )


def oracle_cases(run: RunDir, cases: Cases, *, seed: int = 0) -> Cases | None:
    """One oracle re-render of each case's anatomy (:func:`medlsdm.data.phantom.oracle.oracle_samples`); ``None``
    on real data."""

    try:
        images = list(oracle_samples(run.data, cases.ids, 1, seed=seed)[:, 0])
    except ConfigError as err:
        log.info("no oracle: %s", err)
        return None
    return Cases(list(cases.ids), images, list(cases.labels), list(cases.affines))


def distances(
    run: RunDir,
    model,
    test: Cases,
    synthetic_test: Cases,
    val: Cases,
    oracle: Cases | None,
    *,
    frd: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """KID (segmentation features, bootstrap CI) and FRD of synthetic vs real test volumes beside
    the real-vs-real reference (real test vs validation) and oracle vs real test
    (:func:`medlsdm.evaluation.controls.distances_with_references`; radiomics features cached in
    ``RUN/samples/eval/radiomics``)."""

    sets = {"real_test": test.images, "synthetic": synthetic_test.images, "val": val.images}
    pairs = {"synthetic": ("real_test", "synthetic"), "reference": ("real_test", "val")}
    if oracle is not None:
        sets["oracle"], pairs["oracle"] = oracle.images, ("real_test", "oracle")
    return distances_with_references(model, sets, pairs, frd=frd, cache_dir=run.eval_samples / "radiomics", seed=seed)


def paper_conventions(model, test: Cases, synthetic_test: Cases, num_classes: int) -> dict[str, dict[str, Any]]:
    """:func:`medlsdm.metrics.paper_conventions.paper_convention_table` of the synthetic test set:
    PSNR and SSIM (paired with the real volumes), the FID convention on the segmentation
    network's features (no Inception weights offline), and Dice of the network's predictions on
    the synthetic volumes against their label maps."""

    return paper_convention_table(
        real=test.images,
        synthetic=synthetic_test.images,
        real_features=segnet_features(model, test.images, batch_size=4),
        synthetic_features=segnet_features(model, synthetic_test.images, batch_size=4),
        pred_labels=predict(model, synthetic_test.images),
        true_labels=synthetic_test.labels,
        num_classes=num_classes,
    )


def model_info(run: RunDir, pipe=None) -> dict[str, Any]:
    """Dataset, decoder and VQ-GAN channels of a run (the first columns of the paper's table)."""

    manifest = load_manifest(run.data)
    info = {"dataset": manifest.dataset, "decoder": "?", "channels": "?"}
    if pipe is not None:
        cfg = pipe.vqgan.config
        info.update(decoder=cfg.decoder_type, channels="-".join(str(c) for c in cfg.channels))
    return info


def evaluate_run(run_dir: str | os.PathLike, **params: Any) -> dict[str, Any]:
    """All evaluation steps on a run, as notebook 05 runs them; writes and returns ``metrics.json["05_evaluation"]``.

    Needs notebooks 01 (data) and 03 (pipeline) to have run; synthetic volumes already in
    ``RUN/samples/eval/<setting>/`` (e.g. from notebook 05) are reused when the same pipeline
    made them. ``params``: any field of :class:`~medlsdm.settings.EvaluationSettings` (notebook 05's
    parameters; its defaults are the quick profile's), an unknown one raises ``ConfigError`` before
    any work; ``judge_options`` are :func:`~medlsdm.training.judge.train_judge`'s.
    """
    return _evaluate_run(run_dir, **with_defaults("evaluate_run", EvaluationSettings, params))


def _evaluate_run(
    run_dir: str | os.PathLike,
    *,
    scheduler: str,
    steps: int,
    guidance_scale: float,
    seed: int,
    n_test: int | None,
    judge_seeds: int,
    judge_options: Mapping[str, Any],
    n_train_maps: int | None,
    augment: bool,
    n_small: int,
    n_new: int,
    lesion_augmentation: bool | None,
    lesion_edit_steps: int,
    frd: bool,
    weights: Mapping[str, Any] | None,
    progress: bool,
    negative_control: str,
) -> dict[str, Any]:

    start = time.perf_counter()
    available_feature_metrics(dict(weights or {}))  # a mistyped weight path fails before any work
    run = RunDir(run_dir)
    manifest = load_manifest(run.data)
    class_names, split = manifest.classes, load_split(run.split_path)
    pipe = load_pipeline(run.root)
    settings = dict(scheduler=scheduler, steps=steps, guidance_scale=guidance_scale, seed=seed)
    syn, _ = synthetic_sets(
        run, pipe, split, n_test=n_test, n_train_maps=n_train_maps, n_new=n_new if augment else 0, **settings
    )
    train, val, test = real_cases(run, split["train"]), real_cases(run, split["val"]), real_cases(run, syn["test"].ids)
    judge_kw = dict(seeds=list(range(seed, seed + judge_seeds)), options=judge_options, progress=progress)
    oracle = oracle_cases(run, test, seed=seed + 2)
    quality = image_quality(test, syn["test"])
    seg = segmentation_experiment(train, val, test, syn["test"], class_names, oracle_test=oracle, **judge_kw)
    extras = augmentation_extras(run, pipe, syn["new"]) if syn.get("new") is not None else None
    lesion_skipped = lesion_arm_skipped(lesion_augmentation, seg.dice["real_test"], class_names)
    if extras and lesion_skipped is None:
        extras["lesion_edits"] = lesion_edits(
            pipe,
            train.head(n_small),
            class_names,
            manifest.spacing,
            scheduler=scheduler,
            steps=lesion_edit_steps,
            seed=seed,
        )
    aug = (
        augmentation_experiment(
            train,
            val,
            test,
            extras,
            class_names,
            seg.dice["real_test"],
            n_small=n_small,
            seed=seed,
            lesion_skipped=lesion_skipped,
            **judge_kw,
        )
        if extras
        else None
    )
    features = feature_distances(test, syn["test"], seg.models[0], weights)
    privacy = memorisation(
        run,
        train,
        {"from_train_maps": syn["train"], "from_test_maps": syn["test"]},
        val + test,
        seed=seed,
        negative_control=negative_control,
    )
    dist = distances(run, seg.models[0], test, syn["test"], val, oracle, frd=frd, seed=seed)
    result = evaluation_metrics(
        quality=quality,
        segmentation=seg,
        features=features,
        privacy=privacy,
        dist=dist,
        augmentation=aug,
        conventions=paper_conventions(seg.models[0], test, syn["test"], len(class_names)),
        model_info=model_info(run, pipe),
        seconds=time.perf_counter() - start,
        settings={
            **settings,
            "judge_seeds": judge_seeds,
            "judge_options": dict(judge_options or {}),
            "n_small": n_small,
            "n_new": n_new,
            "augment": augment,
            "n_train_maps": n_train_maps,
            "lesion_augmentation": lesion_augmentation,
            "lesion_edit_steps": lesion_edit_steps,
        },
    )
    run.update_metrics(METRICS_KEYS["05"], result)
    return result
