"""Comparing a generator with the phantom oracle: the statistics, and what they say.

The oracle re-renders (:mod:`medlsdm.data.phantom.oracle`: the anatomy of a case re-rendered
with fresh hidden factors and preprocessed as notebook 01 preprocessed the case) are what a
perfect label-conditioned generator would produce: the reference for diversity (how much one
label map's samples differ) and for the distribution of every hidden factor. A paired metric
against the one real volume cannot tell a perfect sampler from the conditional mean; these can.

Factor *estimators* measure a factor from a volume and its label map (e.g. the aorta's mean
intensity estimates the contrast phase; the classes per dataset are
:data:`~medlsdm.data.phantom.oracle.FACTOR_CLASSES`), so they apply equally to real,
re-rendered and synthetic volumes.
"""

from __future__ import annotations

import logging
import time
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage
from scipy.stats import wasserstein_distance

from ..data.phantom.oracle import FACTOR_CLASSES, NOISE_CLASS, TEXTURE_CLASSES
from ..errors import DataError
from ..metrics.conditional import diversity_ratio, factor_comparison, within_map_spread
from ..metrics.texture import TARGETS, ratio, texture_values, where
from ..pipelines.synthesis import samples_per_map, use_scheduler

log = logging.getLogger(__name__)


def texture_classes(class_names: Sequence[str], dataset: str | None = None) -> list[int]:
    """Indices of the :data:`~medlsdm.data.phantom.oracle.TEXTURE_CLASSES` of ``dataset`` present in the class table."""
    names = TEXTURE_CLASSES.get(dataset, tuple(class_names[1:]))
    return [list(class_names).index(c) for c in names if c in class_names]


def _eroded(mask: np.ndarray) -> np.ndarray:
    """The mask eroded by one voxel in-plane (kept as it is when erosion would empty it)."""
    inner = ndimage.binary_erosion(mask, structure=np.ones((1, 3, 3), bool))
    return inner if inner.sum() >= 8 else mask


def factor_estimates(
    volumes: Sequence[np.ndarray], labels: Sequence[np.ndarray], class_names: Sequence[str], dataset: str | None = None
) -> dict[str, np.ndarray]:
    """Estimate the hidden factors of each volume from the volume and its label map.

    Estimators: ``<class>_mean`` (mean intensity inside the class, eroded by one voxel
    in-plane, so partial volume with neighbours barely counts) for each class of
    :data:`~medlsdm.data.phantom.oracle.FACTOR_CLASSES` ``[dataset]`` present in the class table, and ``noise``
    (std of the
    volume minus its Gaussian blur of 1 voxel inside :data:`~medlsdm.data.phantom.oracle.NOISE_CLASS`). A volume without
    the class gets NaN for that estimator.

    Args:
        volumes: ``(1, D, H, W)`` or ``(D, H, W)`` arrays in [-1, 1].
        labels: their ``(D, H, W)`` label maps.
        class_names: the class table's names.
        dataset: the dataset (adapter) name, to choose the estimators.

    Returns:
        ``{estimator: (N,) array}`` in the volumes' intensity units.
    """
    if len(volumes) != len(labels):
        raise DataError(f"factor_estimates: {len(volumes)} volumes but {len(labels)} label maps")
    names = [c for c in FACTOR_CLASSES.get(dataset, tuple(class_names[1:])) if c in class_names]
    noise_class = NOISE_CLASS.get(dataset, names[0] if names else None)
    out = {f"{c}_mean": np.full(len(volumes), np.nan) for c in names}
    if noise_class in class_names:
        out["noise"] = np.full(len(volumes), np.nan)
    for i, (vol, lab) in enumerate(zip(volumes, labels)):
        x = np.asarray(vol, np.float32).reshape(np.shape(lab))
        lab = np.asarray(lab)
        for c in names:
            mask = lab == class_names.index(c)
            if mask.any():
                out[f"{c}_mean"][i] = float(x[_eroded(mask)].mean())
        if "noise" in out:
            mask = lab == class_names.index(noise_class)
            if mask.sum() >= 8:
                fine = x - ndimage.gaussian_filter(x, 1.0)
                out["noise"][i] = float(fine[_eroded(mask)].std())
    return out


def factor_preservation(
    originals: Mapping[str, np.ndarray], reconstructions: Mapping[str, np.ndarray]
) -> dict[str, float]:
    """Pearson correlation of each estimator on originals and on their reconstructions.

    An autoencoder *preserves* a factor when the correlation is high (≥ 0.9): only such
    factors can be judged in the diffusion model's samples; the others are the
    autoencoder's limit, not the sampler's.
    """
    out = {}
    for name, a in originals.items():
        b = np.asarray(reconstructions[name])
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
            out[name] = float("nan")
        else:
            out[name] = float(np.corrcoef(a[ok], b[ok])[0, 1])
    return out


def _flat(volumes: np.ndarray, labels: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``(M, S, 1, *spatial)`` volumes of ``M`` label maps → flat lists of volumes and their label maps."""
    volumes = np.asarray(volumes)
    return [v for per_map in volumes for v in per_map], [lab for lab in labels for _ in range(volumes.shape[1])]


def compare_with_oracle(
    samples: np.ndarray,
    oracle: np.ndarray,
    oracle_raw: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    dataset: str | None = None,
    *,
    preserved_min: float = 0.9,
) -> dict:
    """Compare a generator's samples with oracle re-renders of the same label maps.

    ``oracle`` are the oracle re-renders passed through the VQ-GAN (the best the latent
    diffusion model can do: what the latent grid cannot hold, e.g. fine noise, is not counted
    against the sampler); ``oracle_raw`` the same re-renders before the VQ-GAN. The oracle
    re-renders of each map are split in two halves to give the oracle-vs-oracle reference
    (what the statistics look like when the generator is perfect).

    - Diversity ratio: mean over maps of (mean pairwise RMSE inside the body across samples) /
      (the same across reconstructed oracle re-renders); 1 is right, 0 is a sampler whose
      output does not depend on its noise. ``diversity_ratio_raw`` uses the raw re-renders.
    - Factors: :func:`factor_estimates` on samples and oracle; per estimator the
      1-Wasserstein distance and the two-sample KS p-value (scipy), and the within-map spread
      ratio (:func:`~medlsdm.metrics.conditional.within_map_spread` of the samples over the
      oracle's; ≈ 1 when the noise draws the factor, → 0 when the label map fixes it). An estimator is
      *counted* when the VQ-GAN preserves it (correlation of its values on raw and
      reconstructed re-renders ≥ ``preserved_min``); the others are the autoencoder's limit.

    Args:
        samples: ``(M, S, 1, *spatial)``: ``S`` samples of each of ``M`` label maps.
        oracle / oracle_raw: ``(M, R, 1, *spatial)``, ``R >= 4`` even.
        labels: ``(M, *spatial)``.
        class_names, dataset: for :func:`factor_estimates`.
        preserved_min: correlation from which the autoencoder counts as preserving a factor.

    Returns:
        ``{"diversity_ratio", "diversity_ratio_raw", "diversity_reference", "factor_w1",
        "factor_ks_p", "factor_spread_ratio", "factor_spread_reference", "factor_preserved",
        "counted", "factor_reference", "estimates"}``;
        ``factor_w1``/``factor_ks_p`` hold the counted factors, ``factor_all`` every one.
    """

    samples, oracle, oracle_raw, labels = (np.asarray(a) for a in (samples, oracle, oracle_raw, labels))
    r = oracle.shape[1]
    if r < 4 or r % 2 or oracle_raw.shape != oracle.shape:
        raise DataError(
            f"compare_with_oracle: needs an even number >= 4 of oracle re-renders per map "
            f"(raw and reconstructed alike), got {oracle.shape} and {oracle_raw.shape}"
        )
    if samples.shape[0] != oracle.shape[0] or len(labels) != samples.shape[0]:
        raise DataError(
            f"compare_with_oracle: {samples.shape[0]} sample sets, {oracle.shape[0]} oracle sets, "
            f"{len(labels)} label maps"
        )
    masks = list(labels > 0)
    half_a, half_b = oracle[:, : r // 2], oracle[:, r // 2 :]
    estimates = {
        name: factor_estimates(*_flat(v, labels), class_names, dataset)
        for name, v in (("synthetic", samples), ("oracle", oracle), ("oracle_raw", oracle_raw))
    }
    estimates["oracle_a"] = factor_estimates(*_flat(half_a, labels), class_names, dataset)
    estimates["oracle_b"] = factor_estimates(*_flat(half_b, labels), class_names, dataset)
    # estimators measurable here: the class is in enough label maps
    usable = [f for f in estimates["oracle"] if all(np.isfinite(est[f]).sum() >= 2 for est in estimates.values())]
    finite = {k: {f: est[f][np.isfinite(est[f])] for f in usable} for k, est in estimates.items()}
    preserved = factor_preservation(
        {f: estimates["oracle_raw"][f] for f in usable}, {f: estimates["oracle"][f] for f in usable}
    )
    counted = [f for f, c in preserved.items() if np.isfinite(c) and c >= preserved_min]
    comparison = factor_comparison(finite["synthetic"], finite["oracle"])
    reference = factor_comparison(finite["oracle_a"], finite["oracle_b"])
    per_map = {"synthetic": samples.shape[1], "oracle": r, "oracle_a": r // 2, "oracle_b": r // 2}

    def spread_ratio(a: str, b: str) -> dict[str, float]:
        spreads = {
            f: (within_map_spread(estimates[a][f], per_map[a]), within_map_spread(estimates[b][f], per_map[b]))
            for f in usable
        }
        return {f: num / den if den > 0 else float("nan") for f, (num, den) in spreads.items()}

    return {
        "diversity_ratio": diversity_ratio(list(samples), list(oracle), masks),
        "diversity_ratio_raw": diversity_ratio(list(samples), list(oracle_raw), masks),
        "diversity_reference": diversity_ratio(list(half_a), list(half_b), masks),
        "factor_w1": {f: comparison[f]["w1"] for f in counted},
        "factor_ks_p": {f: comparison[f]["ks_p"] for f in counted},
        "factor_all": comparison,
        "factor_spread_ratio": spread_ratio("synthetic", "oracle"),
        "factor_spread_reference": spread_ratio("oracle_a", "oracle_b"),
        "factor_preserved": preserved,
        "counted": counted,
        "factor_reference": reference,
        "estimates": {k: {f: est[f].tolist() for f in usable} for k, est in estimates.items()},
    }


def texture_vs_oracle(
    samples: np.ndarray,
    oracle_raw: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    dataset: str | None = None,
    *,
    autoencoded: np.ndarray | None = None,
) -> dict:
    """Texture of a generator's samples against **raw** oracle re-renders of the same label maps.

    :func:`~medlsdm.metrics.texture.texture_values` (noise level in the :func:`texture_classes`,
    high-frequency power inside the body) of every volume; each ratio is the mean over one set
    over the mean over another (:func:`~medlsdm.metrics.texture.ratio`):

    - ``noise_ratio``, ``hf_power_ratio``: samples over raw oracle re-renders (1 is right; a
      decoder that smooths the noise away scores far below);
    - ``*_reference``: the first half of each map's re-renders over the second (what 1 looks
      like on this many volumes);
    - with ``autoencoded`` (the same re-renders through the autoencoder): ``*_autoencoder``,
      autoencoded over raw (what the autoencoder loses), and ``*_diffusion``, samples over
      autoencoded (what the diffusion model loses on top); the two multiply to the samples' ratio.

    Args:
        samples: ``(M, S, 1, *spatial)``; oracle_raw (and autoencoded): ``(M, R, 1, *spatial)``, R even.
        labels: ``(M, *spatial)``.
        class_names, dataset: for :func:`texture_classes`.

    Returns:
        the ratios, and ``"noise_level"`` / ``"hf_power"``: ``{set: mean}`` in intensity units (squared).
    """

    labels, r = np.asarray(labels), np.shape(oracle_raw)[1]
    if r < 2 or r % 2 or len(samples) != len(labels) or len(oracle_raw) != len(labels):
        raise DataError(
            f"texture_vs_oracle: {len(samples)} sample sets, oracle {np.shape(oracle_raw)} (an even number "
            f"of re-renders per map), {len(labels)} label maps"
        )
    classes = texture_classes(class_names, dataset)
    if not classes:
        log.warning(
            "texture_vs_oracle: no homogeneous class of %s in %s: the noise ratios are NaN", dataset, list(class_names)
        )
    sets = {"synthetic": samples, "oracle": oracle_raw}
    if autoencoded is not None:
        sets["oracle via the autoencoder"] = autoencoded
    values = {name: texture_values(*_flat(v, labels), classes) for name, v in sets.items()}
    halves = {k: v.reshape(len(labels), r) for k, v in values["oracle"].items()}
    out = {}
    for key, measure in (("noise_ratio", "noise"), ("hf_power_ratio", "hf_power")):
        out[key] = ratio(values["synthetic"][measure], values["oracle"][measure])
        out[f"{key}_reference"] = ratio(halves[measure][:, : r // 2], halves[measure][:, r // 2 :])
        if autoencoded is not None:
            out[f"{key}_autoencoder"] = ratio(values["oracle via the autoencoder"][measure], values["oracle"][measure])
            out[f"{key}_diffusion"] = ratio(values["synthetic"][measure], values["oracle via the autoencoder"][measure])
    for measure, name in (("noise", "noise_level"), ("hf_power", "hf_power")):
        out[name] = {k: ratio(v[measure], [1.0]) for k, v in values.items()}  # the mean of the finite values
    return out


def texture_sentence(texture: Mapping) -> str:
    """A reading of :func:`texture_vs_oracle`'s numbers, its words chosen from them: where each
    ratio lies against :data:`~medlsdm.metrics.texture.TARGETS` and the oracle's own ratio,
    and, with the autoencoder's ratios, which step departs further from 1."""

    lines = []
    for key, label in (("noise_ratio", "Noise level"), ("hf_power_ratio", "High-frequency power")):
        value, ref = texture[key], texture[f"{key}_reference"]
        (lo, hi), place = TARGETS[key], where(value, key)
        line = (
            f"{label}: the samples have {value:.2f}× the raw oracle's, {place} the target {lo}–{hi} "
            f"(oracle half against half: {ref:.2f}×, {where(ref, key)} it)."
        )
        ae, diff = texture.get(f"{key}_autoencoder"), texture.get(f"{key}_diffusion")
        if ae is not None and np.isfinite(ae) and np.isfinite(diff) and ae > 0 and diff > 0:
            larger = "the autoencoder's" if abs(np.log(ae)) >= abs(np.log(diff)) else "the diffusion model's"
            line += (
                f" The autoencoder alone gives {ae:.2f}× and the diffusion model {diff:.2f}× on top of it: "
                f"the larger departure from 1 is {larger}."
            )
        lines.append(line)
    return "\n".join(lines)


#: Within-map spread ratio from which the noise counts as drawing a factor (issue 24's bar).
SPREAD_MIN = 0.5


def spread_sentence(judged: Mapping) -> str:
    """A reading of :func:`compare_with_oracle`'s within-map spread, its words chosen from the
    numbers: per counted factor the ratio against :data:`SPREAD_MIN` and the oracle's own
    half-against-half ratio, then whether the noise or the label map sets the factors."""
    counted = list(judged["counted"])
    if not counted:
        return "No factor is counted (the autoencoder keeps none at r ≥ 0.9): the spread cannot be judged here."
    ratios = {f: judged["factor_spread_ratio"][f] for f in counted}
    parts = [
        f"{f} {r:.2f} (oracle half against half {judged['factor_spread_reference'][f]:.2f})" for f, r in ratios.items()
    ]
    low = [f for f, r in ratios.items() if not r >= SPREAD_MIN]
    verdict = (
        f"every counted factor varies with the noise at least {SPREAD_MIN} as much as in the oracle: the samples "
        "draw their appearance from their noise."
        if not low
        else f"{', '.join(low)} {'varies' if len(low) == 1 else 'vary'} less than {SPREAD_MIN}× as much as in the "
        "oracle: for a given label map the model mostly reads these factors off the map instead of drawing "
        "them from its noise, so the samples of one map look more alike than real patients with that anatomy would."
    )
    said = f"Within-map spread, samples over oracle: {'; '.join(parts)}. So {verdict}"
    diversity = judged.get("diversity_ratio")
    if low and diversity is not None and diversity >= SPREAD_MIN:
        said += (
            f" The diversity ratio ({diversity:.2f}) does not contradict this: it counts every difference between "
            "two samples of a map, texture and noise included, so it stays high while the organs' appearance is fixed."
        )
    return said


def scheduler_distributions(
    pipe,
    labels: np.ndarray,
    settings: Sequence[Sequence],
    oracle: np.ndarray,
    class_names: Sequence[str],
    dataset: str | None = None,
    *,
    factors: Sequence[str],
    n_samples: int = 4,
    guidance_scale: float = 1.0,
    seed: int = 0,
) -> dict[str, dict]:
    """Judge samplers on distributions, not on paired errors from one noise.

    For each ``(scheduler, steps)``: ``n_samples`` samples per label map, their diversity ratio
    against the (reconstructed) oracle re-renders, and per factor estimator the
    1-Wasserstein distance to the oracle and to the *first* setting's samples (the reference,
    e.g. DDPM with all 1000 steps). A solver that matches the reference in distribution is
    accurate; one that matches the oracle is also what the model should be.

    Args:
        pipe: the pipeline (its scheduler is restored afterwards).
        labels: ``(M, *spatial)``; oracle: ``(M, R, 1, *spatial)`` for the same maps.
        settings: ``[(scheduler name, steps), ...]``, the reference first.
        factors: the estimators to compare (e.g. the counted ones of :func:`compare_with_oracle`).

    Returns:
        ``{"<scheduler>-<steps>": {"seconds_per_volume", "diversity_ratio", "w1_oracle": {…},
        "w1_reference": {…}}}``.
    """

    def w1(a, b):
        a, b = np.asarray(a), np.asarray(b)
        return float(wasserstein_distance(a[np.isfinite(a)], b[np.isfinite(b)]))

    labels = np.asarray(labels)
    masks = list(labels > 0)
    oracle_est = factor_estimates(*_flat(oracle, labels), class_names, dataset)
    original, out, reference = pipe.scheduler, {}, None
    try:
        for name, steps in settings:
            use_scheduler(pipe, name)
            start = time.perf_counter()
            samples = samples_per_map(
                pipe, labels, n_samples, steps=int(steps), guidance_scale=guidance_scale, seed=seed
            )
            seconds = (time.perf_counter() - start) / (len(labels) * n_samples)
            est = factor_estimates(*_flat(samples, labels), class_names, dataset)
            if reference is None:  # the first setting is the reference
                reference = est
            out[f"{name}-{steps}"] = {
                "seconds_per_volume": seconds,
                "diversity_ratio": diversity_ratio(list(samples), list(oracle), masks),
                "w1_oracle": {f: w1(est[f], oracle_est[f]) for f in factors},
                "w1_reference": {f: w1(est[f], reference[f]) for f in factors},
            }
    finally:
        pipe.scheduler = original
    return out
