"""The ``"05_evaluation"`` entry of ``metrics.json`` and its tables and figure (notebook 05, ``medlsdm evaluate``).

:func:`evaluation_metrics` assembles the steps' results of :mod:`medlsdm.evaluation.run`, each
headline number with its per-case values and a bootstrap 95 % CI; :func:`results_tables` turns
the entry into the Markdown tables both entry points show.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from ..metrics.statistics import bootstrap_ci, mean_sd
from ..tables import format_number, markdown_table


def nan_mean(values) -> float:
    """Mean of the finite values (NaN when there are none)."""
    a = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(a)) if np.isfinite(a).any() else math.nan


def with_ci(per_case: Mapping[str, Sequence[float]], *, seed: int = 0) -> dict[str, list[float] | None]:
    """The bootstrap 95 % CI of the mean of each metric's per-case values (NaN left out;
    ``None`` with fewer than two values)."""

    out = {}
    for name, values in per_case.items():
        a = np.asarray(values, dtype=np.float64)
        a = a[np.isfinite(a)]
        out[name] = list(bootstrap_ci(a, seed=seed)) if a.size >= 2 else None
    return out


def evaluation_metrics(
    *,
    quality: Mapping[str, Any],
    segmentation,
    features: Mapping[str, Any],
    privacy: Mapping[str, Any],
    dist: Mapping[str, Any],
    augmentation: Mapping[str, Any] | None,
    conventions: Mapping[str, Any],
    model_info: Mapping[str, Any],
    settings: Mapping[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """The ``"05_evaluation"`` entry of ``metrics.json``: every headline number with its per-case
    values (``per_case``) and bootstrap 95 % CI over cases (``ci``); Dice is the organ mean
    (lesions apart, ``dice_lesion_*``), averaged over the ``judge_seeds`` networks, with the
    sd across seeds (``*_sd_seeds``); ``judge`` describes the judge
    (:meth:`~medlsdm.evaluation.run.SegmentationResult.summary`); ``dice_ratio`` is the Dice on synthetic
    over the Dice on real test volumes and ``dice_ratio_oracle`` the same for oracle re-renders
    (what perfect synthesis gives here); ``lesion_augmentation`` is the augmentation experiment's
    (:func:`medlsdm.evaluation.augmentation.augmentation_experiment`), taken out of ``augmentation``."""

    dice = segmentation.dice
    per_case = {m: [v[m] for v in quality["per_case"].values()] for m in ("ssim", "psnr", "rmse", "nmse")}
    out: dict[str, Any] = {**model_info, **{m: quality[m] for m in ("ssim", "psnr", "rmse", "nmse")}}
    for name, d in dice.items():
        per_case[f"dice_{name}"], per_case[f"dice_lesion_{name}"] = d["organ"], d["lesion"]
        out[f"dice_{name}"], out[f"dice_lesion_{name}"] = nan_mean(d["organ"]), nan_mean(d["lesion"])
        out[f"dice_{name}_sd_seeds"] = mean_sd(d["organ_per_seed"])[1] if len(d["organ_per_seed"]) > 1 else math.nan
    real_test = out["dice_real_test"]
    out["dice_ratio"] = out["dice_synthetic"] / real_test if real_test > 0 else math.nan
    out["dice_ratio_oracle"] = out["dice_oracle"] / real_test if "dice_oracle" in out and real_test > 0 else None
    if augmentation is not None and "gain_per_case" in augmentation:
        per_case["augmentation_gain"] = augmentation["gain_per_case"]
    kid = dist["kid"]
    frd = dist["frd"] or {}
    mem = privacy["synthetic"]
    out.update(
        {
            "dice_per_class": {name: d["per_class"] for name, d in dice.items()},
            "judge": segmentation.summary(),
            "judge_seeds": len(segmentation.fits),
            "fd_seg": features["fd_seg"],
            "fid": features["fid"],
            "fid_3d": features["fid_3d"],
            "lpips": features["lpips"],
            "skipped": {**features["skipped"], **({"frd": dist["frd_skipped"]} if dist["frd_skipped"] else {})},
            "kid": kid["synthetic"]["kid"],
            "kid_ci": kid["synthetic"]["ci"],
            "kid_reference": kid["reference"]["kid"],
            "kid_reference_ci": kid["reference"]["ci"],
            "kid_oracle": kid.get("oracle", {}).get("kid"),
            "frd": frd.get("synthetic"),
            "frd_reference": frd.get("reference"),
            "frd_oracle": frd.get("oracle"),
            "frd_skipped": dist["frd_skipped"],
            "privacy_controls": {
                "threshold": privacy["threshold"],
                "rule": privacy["rule"],
                "metric": privacy["metric"],
                "positive_flagged": privacy["positive_flagged"],
                "negative_flagged": privacy["negative_flagged"],
                "positive_control": privacy["positive_control"],
                "negative_control": privacy["negative_control"],
                "negative_control_kind": privacy["negative_control_kind"],
                "synthetic_flagged": {name: c["fraction_flagged"] for name, c in mem.items()},
                "distances": {
                    "positive": privacy["positive"]["nn_distance"],
                    "negative": privacy["negative"]["nn_distance"],
                    **{name: c["nn_distance"] for name, c in mem.items()},
                },
            },
            "augmentation": None
            if augmentation is None
            else {k: v for k, v in augmentation.items() if k != "lesion_augmentation"},
            "lesion_augmentation": (augmentation or {}).get("lesion_augmentation"),
            "paper_conventions": {name: row["paper"] for name, row in conventions.items()},
            "paper_conventions_table": dict(conventions),
            "per_case": per_case,
            "ci": with_ci(per_case),
            "n_test": len(quality["per_case"]),
            "settings": dict(settings),
            "seconds": round(float(seconds), 2),
        }
    )
    return out


def _ci(m: Mapping[str, Any], key: str, digits: int = 3) -> str:
    ci = m["ci"].get(key)
    return "–" if ci is None else f"[{format_number(ci[0], digits)}, {format_number(ci[1], digits)}]"


def results_tables(m: Mapping[str, Any]) -> dict[str, str]:
    """Markdown tables of a ``"05_evaluation"`` entry: ``quality`` (the paper's format: dataset,
    decoder, #channels, FID, 3D-FID, LPIPS, SSIM, RMSE, PSNR; FID and LPIPS averaged over the
    three slice orientations), ``dice`` (per class), ``summary`` (each headline number with its
    95 % CI), ``controls`` (memorisation), ``distances`` (KID, FRD beside their references),
    ``augmentation`` and ``conventions`` (the paper's metric conventions)."""

    def fmt(value, digits: int = 4) -> str:
        return format_number(value, digits, missing="skipped")

    def mean_of(values):
        return float(np.mean(list(values.values()))) if isinstance(values, Mapping) else values

    tables = {
        "quality": markdown_table(
            ["dataset", "decoder", "#channels", "FID ↓", "3D-FID ↓", "LPIPS ↓", "SSIM ↑", "RMSE ↓", "PSNR ↑"],
            [
                [
                    m["dataset"],
                    m["decoder"],
                    m["channels"],
                    fmt(mean_of(m["fid"])),
                    fmt(m["fid_3d"]),
                    fmt(mean_of(m["lpips"])),
                    fmt(m["ssim"]),
                    fmt(m["rmse"]),
                    fmt(m["psnr"]),
                ]
            ],
        )
    }
    columns = list(m["dice_per_class"])
    rows = [
        [name] + [fmt(m["dice_per_class"][c][name], 3) for c in columns] for name in m["dice_per_class"][columns[0]]
    ]
    rows.append(["**organ mean**"] + [fmt(m[f"dice_{c}"], 3) for c in columns])
    tables["dice"] = markdown_table(["class"] + [c.replace("_", " ") for c in columns], rows)
    summary = [
        [
            key.replace("_", " "),
            fmt(m[key], 3),
            f"± {fmt(m.get(key + '_sd_seeds'), 2)}" if key + "_sd_seeds" in m else "",
            _ci(m, key),
        ]
        for key in (
            "ssim",
            "psnr",
            "rmse",
            "dice_real_test",
            "dice_synthetic",
            "dice_oracle",
            "dice_lesion_real_test",
            "dice_lesion_synthetic",
        )
        if key in m
    ]
    summary.append(["Dice synthetic / real test", fmt(m["dice_ratio"], 3), "", ""])
    if m.get("dice_ratio_oracle") is not None:
        summary.append(["Dice oracle / real test (perfect synthesis)", fmt(m["dice_ratio_oracle"], 3), "", ""])
    tables["summary"] = markdown_table(
        [f"measure (n = {m['n_test']} test cases)", "mean", f"sd over {m['judge_seeds']} seeds", "95 % CI over cases"],
        summary,
    )
    pc = m["privacy_controls"]
    tables["controls"] = markdown_table(
        ["set", "flagged as copies"],
        [
            ["positive control (copies)", f"{pc['positive_flagged']:.0%}"],
            [f"negative control ({pc['negative_control_kind']})", f"{pc['negative_flagged']:.0%}"],
            *[[f"synthetic {name.replace('_', ' ')}", f"{v:.0%}"] for name, v in pc["synthetic_flagged"].items()],
        ],
    )
    tables["distances"] = markdown_table(
        ["distance", "synthetic vs real test", "real vs real (val vs test)", "oracle vs real test"],
        [
            [
                "KID (segmentation features)",
                f"{fmt(m['kid'])} {ci_text(m['kid_ci'])}",
                f"{fmt(m['kid_reference'])} {ci_text(m['kid_reference_ci'])}",
                fmt(m["kid_oracle"]),
            ],
            ["FRD (radiomics)", fmt(m["frd"]), fmt(m["frd_reference"]), fmt(m["frd_oracle"])],
        ],
    )
    aug = m["augmentation"]
    if aug:
        arms = [
            [
                name.replace("_", " "),
                fmt(a["mean"], 3),
                fmt(a["sd_seeds"], 2),
                fmt(a["gain"], 3) if "gain" in a else "– (baseline)",
                ci_text(a.get("gain_ci")),
                fmt(a["lesion"], 3),
                f"{fmt(a['lesion_gain'], 3)} {ci_text(a.get('lesion_gain_ci'))}"
                if "lesion_gain" in a
                else "– (baseline)",
                ", ".join(map(str, a["lesions_found"])),
            ]
            for name, a in aug["arms"].items()
        ]
        tables["augmentation"] = markdown_table(
            [
                "arm",
                "organ Dice (real test)",
                "sd over seeds",
                "gain over real small",
                "95 % CI (cases and seeds)",
                "lesion Dice",
                "lesion gain [95 % CI]",
                "lesions found (per seed)",
            ],
            arms,
        )
    reported = {"dice": f"{PAPER['dice_synthetic']} synthetic, {PAPER['dice_real']} real ({PAPER['dataset']})"}
    rows = [
        [
            CONVENTION_LABELS.get(name, name),
            fmt(row["ours"]),
            fmt(row["paper"]),
            row["convention"],
            reported.get(name, "–"),
        ]
        for name, row in m["paper_conventions_table"].items()
    ]
    rows.append(
        [
            CONVENTION_LABELS["fid_3d"],
            fmt(m.get("fid_3d")),
            "–",
            FID_3D_CONVENTION,
            f"{PAPER['fid_3d']} ({PAPER['dataset']})",
        ]
    )
    tables["conventions"] = markdown_table(
        ["metric", "ours", "as the paper's code", "what the convention does", "the paper reports (abstract)"], rows
    )
    return tables


#: The numbers of the Med-LSDM abstract: Tang, Seyam & Yang, "Towards 3D Semantic Image Synthesis
#: for Medical Imaging", arXiv:2507.00206 (2025).
PAPER = {
    "source": "Tang, Seyam & Yang, *Towards 3D Semantic Image Synthesis for Medical Imaging* (Med-LSDM), "
    "arXiv:2507.00206",
    "dataset": "Duke Breast",
    "dice_synthetic": 0.70964,
    "dice_real": 0.71496,
    "fid_3d": 0.0054,
}
#: Row names of the conventions table that need saying what they are computed on.
CONVENTION_LABELS = {
    "fid_2d": "FID convention, on the segmentation network's features (not Inception: no weights offline)",
    "fid_3d": "3D-FID (MedicalNet features)",
}
FID_3D_CONVENTION = (
    "the reference code's 1000×2048 feature buffer is allocated with np.empty and keeps its unfilled "
    "rows when there are fewer than 1000 volumes: statistics of uninitialised memory"
)


def ci_text(ci) -> str:
    """``[low, high]`` of a CI, or nothing without one."""
    return "" if ci is None else f"[{format_number(ci[0], 3)}, {format_number(ci[1], 3)}]"
