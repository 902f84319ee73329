"""What the numbers of notebooks 04 (synthesis) and 07 (whole volumes, edits) show, in words
chosen from the numbers (the style of :mod:`medlsdm.interpret`: comparison, control, likely
cause; ``tests/test_interpret.py`` flips a number and sees the sentence flip)."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from .evaluation.oracle import spread_sentence
from .interpret import bullets, ci_side, ci_text

#: A two-sample KS p-value below this says two factor distributions differ.
KS_ALPHA = 0.05


# ---------------------------------------------------------------- 04 · synthesis


def factor_sentence(judged: Mapping) -> str:
    """The pooled factor comparison of :func:`~medlsdm.evaluation.oracle.compare_with_oracle`
    (or notebook 04's entry): per counted factor, whether the KS test tells the samples from the
    oracle, with W1 beside the oracle's own half-against-half W1; the factors the autoencoder loses."""
    counted = list(judged["counted"])
    lost = [f for f in judged["factor_preserved"] if f not in counted]
    said = []
    if counted:
        ks, w1, ref = judged["factor_ks_p"], judged["factor_w1"], judged["factor_reference"]
        differ = [f for f in counted if ks[f] < KS_ALPHA]
        alike = [f for f in counted if f not in differ]

        def detail(f):
            times = w1[f] / ref[f]["w1"] if ref[f]["w1"] > 0 else math.inf
            return f"{f} (KS p {ks[f]:.3f}, W1 {times:.1f}× the oracle's own)"

        if differ:
            said.append(
                f"Pooled over maps, the samples' {', '.join(map(detail, differ))} "
                f"{'differs' if len(differ) == 1 else 'differ'} from the oracle's."
            )
        if alike:
            said.append(f"For {' and '.join(map(detail, alike))} the test sees no difference.")
    else:
        said.append("No factor is counted: the autoencoder keeps none well enough to judge the diffusion model by it.")
    if lost:
        kept = judged["factor_preserved"]
        said.append(
            f"Not counted: {', '.join(f'{f} (r {kept[f]:.2f})' for f in lost)}; the "
            "autoencoder does not keep it (r < 0.9), so it says nothing about the diffusion model."
        )
    return " ".join(said)


def paired_sentence(paired: Mapping[str, Mapping[str, float]]) -> str:
    """SSIM against the one real volume: samples beside a perfect sampler (an oracle re-render),
    the conditional mean, and the oracle through the autoencoder (who owns the gap)."""
    syn = paired["synthetic"]["ssim"]
    if "oracle re-render" not in paired:
        return (
            f"The samples score SSIM {syn:.3f} against the real volumes; "
            "with no oracle there is nothing to read it against."
        )
    ora, mean = paired["oracle re-render"]["ssim"], paired["oracle mean"]["ssim"]
    said = (
        f"SSIM against the real volume of the same label map: samples {syn:.3f}, a perfect sampler (an oracle "
        f"re-render) {ora:.3f}, the mean of the re-renders {mean:.3f}. "
    )
    if mean > ora:
        said += (
            "The mean of many right answers beats a right answer: a paired metric rewards the conditional mean, "
            "i.e. blur, so it cannot rank samplers on its own. "
        )
    ae = paired.get("oracle via the autoencoder", {}).get("ssim")
    if ae is not None and ora > syn:
        share = (ora - ae) / (ora - syn)
        said += (
            f"Of the gap from the perfect sampler to the samples ({ora - syn:.3f}), the autoencoder owns "
            f"{100 * min(max(share, 0), 1):.0f} % (oracle through it: {ae:.3f}) and the diffusion model the rest."
        )
    elif syn >= ora:
        said += (
            "The samples match the real volumes at least as well as a perfect sampler: "
            "suspect blur or a copied appearance."
        )
    return said


def class_error_sentence(errors: Mapping[str, float]) -> str:
    """The per-class intensity error: its mean, and the worst class against the mean."""
    mean = float(np.mean(list(errors.values())))
    worst = max(errors, key=errors.get)
    times = f" ({errors[worst] / mean:.1f}× the average)" if mean > 0 else ""
    return (
        f"Class means of the samples are off by {mean:.3f} of the real range on average; the worst class, {worst}, "
        f"by {errors[worst]:.3f}{times}. Part of any error is the real case's own "
        "hidden factors, which no sampler can know: section 7 sets it beside an oracle re-render's."
    )


def guidance_sentence(error: Mapping, floor: float | None) -> str:
    """The guidance sweep (class-intensity error through the VQ-GAN per scale, keys floats or
    strings) beside the floor a perfect sampler sets (an oracle re-render's error)."""
    err = {float(s): v for s, v in error.items()}
    said = []
    if 0.0 in err and 1.0 in err and err[1.0] > 0:
        ratio = err[0.0] / err[1.0]
        said.append(
            f"Without the label map (s = 0) the error is {ratio:.1f}× that of the conditional model (s = 1): "
            + (
                "the samples follow their label maps, and the null condition was learnt."
                if ratio >= 2
                else "the label map hardly matters to the samples; check condition dropout and the decoder."
            )
        )
    best = min(err, key=err.get)
    said.append(
        f"The lowest error is at s = {best:g} ({err[best]:.4f})"
        + (
            f", larger scales raise it ({', '.join(f's = {s:g}: {err[s]:.4f}' for s in sorted(err) if s > best)}): "
            "guidance pushes the class means past the real ones."
            if any(s > best for s in err)
            else "."
        )
    )
    if floor is not None and math.isfinite(floor):
        near = err[best] <= 1.25 * floor
        said.append(
            f"A perfect sampler scores {floor:.4f} (an oracle re-render: its hidden factors are not the real "
            f"case's), so the best scale is {'at' if near else 'above'} that floor"
            + ("; class means cannot get closer without knowing the real case's factors." if near else ".")
        )
    return " ".join(said)


def scheduler_sentence(schedulers: Mapping[str, Mapping]) -> str:
    """The scheduler comparison: speed against the reference (the first setting) and the
    factor W1 against the oracle beside the reference's."""
    names = list(schedulers)
    ref_name, ref = names[0], schedulers[names[0]]

    def w1(r):
        return float(np.mean(list(r["w1_oracle"].values())))

    fastest = min(names, key=lambda n: schedulers[n]["seconds_per_volume"])
    worse = [n for n in names[1:] if w1(schedulers[n]) > 1.25 * w1(ref)]
    if fastest == ref_name:
        said = f"The reference {ref_name} is already the fastest ({ref['seconds_per_volume']:.2f} s a volume). "
    else:
        said = (
            f"{fastest} takes {schedulers[fastest]['seconds_per_volume']:.2f} s a volume, "
            f"{ref['seconds_per_volume'] / schedulers[fastest]['seconds_per_volume']:.0f}× less than {ref_name} "
            f"({ref['seconds_per_volume']:.1f} s). "
        )
    said += (
        f"Factor W1 against the oracle: {ref_name} {w1(ref):.4f}"
        + "".join(f", {n} {w1(schedulers[n]):.4f}" for n in names[1:])
        + ". "
    )
    if worse:
        said += (
            f"{', '.join(worse)} {'lands' if len(worse) == 1 else 'land'} "
            "further from the oracle than the reference (> 1.25×)."
        )
    else:
        said += "No faster solver lands further from the oracle than the reference (within 1.25×)"
        n = ref.get("n_samples")
        said += f" on {n} samples each: a coarse check." if n else ": on this few samples, a coarse check."
    return said


def takeaways_04(result: Mapping) -> str:
    """The closing cell of notebook 04, from its ``"04_synthesis"`` entry."""
    lines = [
        f"{result['n_samples']} volumes from {result['n_samples'] // result['n_samples_per_map']} test label maps "
        f"({result['scheduler']}, {result['steps']} steps, guidance {result['guidance_scale']:g})."
    ]
    if result.get("counted"):
        lines.append(
            f"Diversity ratio {result['diversity_ratio']:.2f} (oracle against itself "
            f"{result['diversity_reference']:.2f}). " + spread_sentence(result)
        )
    if "counted" in result:
        lines.append(factor_sentence(result))
    lines.append(paired_sentence(result["paired_body"]))
    lines.append(guidance_sentence(result["guidance_error"], result.get("guidance_floor")))
    if result.get("texture"):
        t = result["texture"]
        lines.append(
            f"Texture over the raw oracle's: noise {t['noise_ratio']:.2f}×, high-frequency power "
            f"{t['hf_power_ratio']:.2f}× (1 is right)."
        )
    return bullets(lines)


# ---------------------------------------------------------------- 07 · whole volumes and edits


def seam_sentence(seam: Mapping, windowed: Mapping, one_pass: Mapping) -> str:
    """The seam check: the bar (windowed less one-pass border-minus-centre gap) and the plain
    gaps of both modes, which show how much of a gap the anatomy makes on its own."""
    said = (
        f"Border slices of the windowed samples are {windowed['gap']:+.4f} further from the oracle than centre slices "
        f"{ci_text(windowed['ci'], 4)}, and {one_pass['gap']:+.4f} {ci_text(one_pass['ci'], 4)} for one-pass samples, "
        "which have no windows. "
    )
    side = ci_side(seam["ci"])
    if side == "straddles 0" or side == "below 0":
        said += (
            f"The difference, the bar, is {seam['gap']:+.4f} {ci_text(seam['ci'], 4)}: the windows add no error at "
            "their borders."
        )
        if ci_side(one_pass["ci"]) == "above 0":
            said += (
                " The gap both modes share comes from the slices themselves, not from the windows: the border "
                "slices likely lie in anatomy that is harder for this model (the outer parts of the scan, which it "
                "never saw in training)."
            )
    else:
        said += f"The difference, the bar, is {seam['gap']:+.4f} {ci_text(seam['ci'], 4)}: **the windows leave seams**."
    return said


def edit_sentence(outside_max: float, inserted: Sequence[float], lesion_range: Sequence[float] | None) -> str:
    """The lesion edit: what it keeps (beyond the soft border) and whether its intensity is one the phantom makes."""
    said = f"Beyond the soft border the edited volumes differ from the real ones by at most {outside_max:.1e}" + (
        ": the edit leaves the rest of the volume exactly as it was. " if outside_max == 0 else ". "
    )
    if lesion_range is None:
        return said + "With no oracle, the inserted lesions' intensities have no reference here."
    lo, hi = lesion_range
    inside = [lo <= v <= hi for v in inserted]
    brighter = sum(v > hi for v in inserted)
    darker = sum(v < lo for v in inserted)
    said += (
        f"{sum(inside)} of {len(inserted)} inserted lesions have a mean intensity inside the oracle's lesion range "
        f"[{lo:.3f}, {hi:.3f}]"
    )
    if brighter or darker:
        said += (
            f"; {brighter} {'is' if brighter == 1 else 'are'} brighter and {darker} darker. Lesions are a rare "
            "class in "
            "training, which likely leaves their intensity poorly learnt."
        )
    else:
        said += "."
    return said


def detection_sentence(edited: Mapping, real: Mapping) -> str:
    """The segmentation network's lesion Dice on edited volumes, read against its Dice on the
    real volumes' own lesions (the control)."""
    said = (
        f"The segmentation network scores lesion Dice {edited['dice_mean']:.3f} on the edited volumes (it labels "
        f"{100 * edited['recall_mean']:.0f} % of the inserted lesions' voxels) and {real['dice_mean']:.3f} on the real "
        "test volumes' own lesions. "
    )
    if real["dice_mean"] <= 0.05:
        said += (
            "It does not segment real lesions either, so the edited volumes' number says nothing about the edit; a "
            "small, briefly trained network and a rare class are the likely reasons."
        )
        if edited["recall_mean"] >= 0.5:
            said += " Its high recall with a low Dice means it labels lesion far beyond the lesions."
    elif edited["dice_mean"] >= 0.5 * real["dice_mean"]:
        said += "It finds the inserted lesions about as well as real ones: they look like lesions to it."
    else:
        said += "It finds real lesions but misses most inserted ones: they do not look like lesions to it."
    return said


def takeaways_07(result: Mapping) -> str:
    """The closing cell of notebook 07, from its ``"07_whole_volume"`` entry."""
    lines = []
    if "seam_gap" in result:
        lines.append(
            f"A scan {result['depth']} slices deep ({result['z_extent_mm']:.0f} mm, {result['n_blocks']} blocks) in "
            f"windows of {result['window']} slices overlapping by {result['overlap']}: "
            f"{result['seconds_per_volume']['windowed']:.1f} s a volume windowed, "
            f"{result['seconds_per_volume']['one pass']:.1f} s in one pass."
        )
        lines.append(seam_sentence(result["seam_gap"], result["seam_gap_windowed"], result["seam_gap_one_pass"]))
        err = result["mean_error"]
        lines.append(
            f"Mean distance to the oracle mean per slice: windowed {err['windowed']:.4f}, one pass "
            f"{err['one pass']:.4f}, the oracle's own re-renders {err['oracle via VQ-GAN']:.4f}."
        )
    lines.append(
        edit_sentence(result["edit_outside_max_abs"], result["edit_lesion_mean"], result["oracle_lesion_range"])
    )
    lines.append(
        detection_sentence(
            {"dice_mean": result["edit_lesion_dice"], "recall_mean": result["edit_lesion_recall"]},
            {"dice_mean": result["real_lesion_dice"]},
        )
    )
    return bullets(lines)
