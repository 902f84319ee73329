"""The model card of a pack (``medlsdm pack``), in the Hugging Face format: YAML front matter
(license, tags, datasets, library), then Markdown: what the model was trained on, its settings,
the bars it met, intended use and limits. Every number comes from the run's files (``metrics.json``,
``vqgan/train_params.json``, ``diffusion/train_params.json``, the pipeline's configs, the data
manifest), so the card cannot contradict them; what the run did not measure is said to be missing.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Mapping

from .tables import markdown_table

if TYPE_CHECKING:
    from .data.prepare import Manifest

#: Settings of each trainer's ``train_params.json`` shown on the card.
SETTINGS = {
    "vqgan": (
        "steps",
        "batch_size",
        "crop_shape",
        "lr",
        "lr_schedule",
        "channels",
        "embedding_dim",
        "num_embeddings",
        "decoder_type",
        "commitment_cost",
        "l1_weight",
        "perceptual_weight",
        "gan_weight_2d",
        "gan_weight_3d",
        "disc_start",
        "disc_channels",
        "mixed_precision",
        "seed",
    ),
    "diffusion": (
        "steps",
        "batch_size",
        "lr",
        "channels",
        "attention_levels",
        "conditioning",
        "prediction_type",
        "num_train_timesteps",
        "cond_drop_prob",
        "ema_decay",
        "appearance_swaps",
        "mixed_precision",
        "seed",
    ),
}


def _get(metrics: Mapping, *keys) -> Any:
    for key in keys:
        if not isinstance(metrics, Mapping) or key not in metrics:
            return None
        metrics = metrics[key]
    return metrics


def _num(value: Any, digits: int = 3) -> str:
    return "not measured" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def _ci(ci: Any) -> str:
    return "not measured" if not ci else f"{ci[0]:.3f} to {ci[1]:.3f}"


def bars(metrics: Mapping[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """``(check, value, bar, met)`` rows from ``metrics.json``: each a comparison with its control;
    ``met`` is ``None`` where the notebook did not run."""
    body, vq = _get(metrics, "02_vqgan", "body") or {}, _get(metrics, "02_vqgan", "psnr")
    own_other = _get(metrics, "02_vqgan", "latent_ablation", "own_minus_other")
    rows = []
    ours, base = _get(body, "VQ-GAN", "psnr"), _get(body, "painting + pooled residual", "psnr")
    rows.append(
        (
            "02 VQ-GAN reconstruction, body PSNR (dB), held-out split",
            f"{_num(ours, 2)} vs {_num(base, 2)}",
            "above painting + pooled residual (the same side information)",
            None if ours is None or base is None else ours > base,
        )
    )
    rows.append(
        (
            "02 decoder uses its latent: PSNR own − another case's latent (dB)",
            _num(own_other, 2),
            "> 0",
            None if own_other is None else own_other > 0,
        )
    )
    ratio, ref = _get(metrics, "04_synthesis", "diversity_ratio"), _get(metrics, "04_synthesis", "diversity_reference")
    rows.append(
        (
            "04 diversity of samples over the oracle's",
            f"{_num(ratio, 2)} (oracle vs oracle {_num(ref, 2)})",
            "reported",
            None,
        )
    )
    dice, oracle = _get(metrics, "05_evaluation", "dice_ratio"), _get(metrics, "05_evaluation", "dice_ratio_oracle")
    rows.append(
        (
            "05 judge Dice on synthetic over real test volumes",
            f"{_num(dice)} (oracle {_num(oracle)})",
            "reported beside the oracle's",
            None,
        )
    )
    privacy = _get(metrics, "05_evaluation", "privacy_controls") or {}
    flagged = max(privacy.get("synthetic_flagged", {}).values(), default=None)
    rows.append(
        (
            "05 memorisation: synthetic volumes flagged as copies",
            _num(flagged),
            f"≤ the negative control's {_num(privacy.get('negative_flagged'))}, copies flagged "
            f"{_num(privacy.get('positive_flagged'))}",
            None if flagged is None else flagged <= privacy["negative_flagged"] and privacy["positive_flagged"] == 1.0,
        )
    )
    aug = _get(metrics, "05_evaluation", "augmentation") or {}
    rows.append(
        (
            "05 augmentation: Dice gain of real-small + synthetic over real-small",
            f"{_num(aug.get('gain'))} (95% CI {_ci(aug.get('gain_ci'))})",
            aug.get("bar", "—"),
            aug.get("bar_holds"),
        )
    )
    lesions = _get(metrics, "05_evaluation", "lesion_augmentation") or {}
    ci = lesions.get("gain_ci")
    rows.append(
        (
            "05 lesion augmentation: lesion Dice gain of real-small + lesion edits over real-small",
            f"not measured: {lesions['skipped']}"
            if "skipped" in lesions
            else f"{_num(lesions.get('gain'))} (95% CI {_ci(ci)}; all real cases {_num(lesions.get('control_gain'))})",
            "95% CI above 0",
            None if not lesions else bool(ci) and ci[0] > 0,
        )
    )
    seam = _get(metrics, "07_whole_volume", "seam_gap")
    rows.append(
        (
            "07 windowed whole scans: seam gap over one pass",
            _num(_get(seam, "gap"), 4),
            "95% CI covers 0 or lies below",
            _get(seam, "passes"),
        )
    )
    rows.insert(0, ("02 VQ-GAN reconstruction PSNR (dB), held-out split", _num(vq, 2), "reported", None))
    return rows


def _yaml_list(values) -> str:
    return "".join(f"\n- {json.dumps(v)}" for v in values)  # JSON strings are YAML strings


def model_card(
    *,
    manifest: Manifest,
    metrics: Mapping[str, Any],
    params: Mapping[str, Mapping],
    configs: Mapping[str, Mapping],
    precision: Mapping[str, Any],
    source: str,
) -> str:
    """The ``README.md`` of a pack (see the module doc)."""
    dataset, modality = manifest.dataset, manifest.modality or "?"
    phantom = manifest.data_root is not None
    m01 = metrics.get("01_preprocessing", {})
    data_name = f"medlsdm {dataset} phantom" if phantom else dataset
    tags = [
        "medlsdm",
        "diffusers",
        "latent-diffusion",
        "semantic-image-synthesis",
        "medical-imaging",
        "3d",
        str(modality).lower(),
    ] + (["phantom"] if phantom else [])
    front = (
        f"---\nlicense: apache-2.0\nlibrary_name: diffusers\ntags:{_yaml_list(tags)}\n"
        f"datasets:{_yaml_list([data_name])}\n---\n"
    )
    split = f"{m01.get('n_train', '?')} train / {m01.get('n_val', '?')} validation / {m01.get('n_test', '?')} test"
    lines = [
        f"# Med-LSDM: {modality} from label maps ({dataset}, run `{source}`)",
        "",
        "A 3-D VQ-GAN and a label-conditioned latent diffusion model (`MedLSDMPipeline`, diffusers) that turn a "
        "segmentation map into a volume, trained with the `medlsdm` notebooks 01-03. This pack holds the pipeline, "
        "the preprocessed cases, their split and this card: notebooks 04, 05 and 07 run from it without training "
        "(`medlsdm run --from-pack PACK --run-dir NEW`).",
        "",
        "## Training data",
        "",
        f"- Dataset: {data_name}"
        + (
            " (procedural: anatomy drawn first, then appearance; the oracle re-renders "
            "any anatomy with fresh appearance)"
            if phantom
            else ""
        ),
        f"- Cases: {len(manifest.cases)} blocks, split {split} (patient-level, seed "
        f"{'?' if manifest.seed is None else manifest.seed})",
        f"- Classes: {', '.join(manifest.classes)}",
        f"- Spacing {manifest.spacing} mm (D, H, W), blocks of {manifest.block_shape} voxels, "
        f"intensities {json.dumps(manifest.normalisation)}",
        "",
        "## Settings",
        "",
        f"- VQ-GAN: {_settings(params.get('vqgan', {}), 'vqgan')}",
        f"- Diffusion: {_settings(params.get('diffusion', {}), 'diffusion')}",
        f"- UNet config: {json.dumps({k: v for k, v in configs.get('unet', {}).items() if not k.startswith('_')})}",
        f"- Training time: VQ-GAN {_num(_get(metrics, '02_vqgan', 'train_seconds'), 0)} s, diffusion "
        f"{_num(_get(metrics, '03_diffusion', 'train_seconds'), 0)} s (final loss "
        f"{_num(_get(metrics, '03_diffusion', 'final_loss'), 4)})",
        "",
        "## Results and bars (the source run's metrics.json)",
        "",
        markdown_table(
            ["check", "value", "bar", "met"],
            [[c, v, b, {True: "yes", False: "**no**", None: "—"}[met]] for c, v, b, met in bars(metrics)],
        ),
        "",
        "Notebooks 04-07 rerun from the pack recompute their rows; the numbers above are the source run's.",
        "",
        "## Precision of the stored files",
        "",
        _precision(precision),
        "",
        "## Intended use",
        "",
        "Teaching and method research: reading and rerunning the synthesis, evaluation and editing notebooks "
        "(04, 05, 07) without training, comparing samples with the oracle, trying samplers and guidance.",
        "",
        "## Limits",
        "",
        (
            "- Trained on a procedural phantom, not on patients: its volumes are not clinical images and say nothing "
            "about a real scanner, population or disease."
            if phantom
            else "- Trained on the dataset above only; this pack holds its preprocessed cases: "
            "check the dataset's licence "
            "and data card before sharing the pack or samples."
        ),
        "- Not for diagnosis, treatment or any clinical decision; not validated for any clinical use.",
        f"- Label maps must use the class table above, spacing {manifest.spacing} mm; deeper volumes go in "
        "overlapping windows (notebook 07).",
        "- Small models on a small budget: the bars above say what it does and does not reach.",
    ]
    return front + "\n".join(lines) + "\n"


def _settings(params: Mapping[str, Any], kind: str) -> str:
    shown = {k: params[k] for k in SETTINGS[kind] if k in params}
    return json.dumps(shown) if shown else "not recorded (no train_params.json)"


def _precision(precision: Mapping[str, Any]) -> str:
    check = precision.get("check", {})
    rows = [
        [name, precision[name]["stored"], f"{precision[name]['psnr_db']:.1f} dB", f"{precision[name]['max_abs']:.4f}"]
        for name in ("unet", "vqgan")
        if name in precision
    ]
    table = markdown_table(["weights", "stored as", "sample PSNR vs float32", "largest voxel change"], rows)
    images = precision.get("images", {})
    return (
        f"Weights are stored as float16 where a sample drawn with float16-rounded weights stays within "
        f"{precision.get('tolerance_db')} dB PSNR of the float32 sample ({len(check.get('maps', []))} test label maps, "
        f"{check.get('scheduler')}-{check.get('steps')}, seed {check.get('seed')}); they load as "
        f"float32.\n\n{table}\n\n"
        f"As stored, together: {precision.get('as_stored', {}).get('psnr_db')} dB. Images: {images.get('stored')} "
        f"(largest rounding error {images.get('max_abs_error', float('nan')):.2e} of the [-1, 1] range; "
        f"tolerance {images.get('tolerance')})."
    )
