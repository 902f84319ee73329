"""The sentences notebook 05 and ``medlsdm evaluate`` show beside their numbers, each written from the
numbers it interprets (so it cannot contradict them), and the memorisation figure."""

from __future__ import annotations

import math
from typing import Any, Mapping

import matplotlib.pyplot as plt
import numpy as np

from ..tables import format_number
from .summary import PAPER, ci_text, nan_mean, with_ci


def plot_memorisation(check: Mapping[str, Any]):
    """Nearest-training distances of the controls and of each synthetic set of a
    :func:`medlsdm.evaluation.run.memorisation` result, with the threshold the controls set."""

    sets = {
        "positive control": check["positive"]["nn_distance"],
        "negative control": check["negative"]["nn_distance"],
        **{f"synthetic {k.replace('_', ' ')}": c["nn_distance"] for k, c in check["synthetic"].items()},
    }
    fig, ax = plt.subplots(figsize=(7, 3))
    for name, values in sets.items():
        ax.hist(values, bins=20, alpha=0.5, label=name)
    ax.axvline(check["threshold"], color="k", ls="--", label="threshold")
    ax.set(xlabel=f"distance to the nearest training volume ({check['metric']}, pooled)", ylabel="volumes")
    ax.legend(fontsize=7)
    return fig


def judge_sentence(judge: Mapping[str, Any], dice: Mapping[str, Mapping[str, Any]]) -> str:
    """What the judge is and how good it is, written from :meth:`SegmentationResult.summary
    <medlsdm.evaluation.run.SegmentationResult.summary>` and the per-set Dice of
    :func:`medlsdm.evaluation.cases.dice_over_seeds`."""
    seeds = len(judge["best_steps"])
    early = sum(b < judge["max_steps"] for b in judge["best_steps"])
    said = [
        f"The judge ({judge['network']}, {seeds} seeds) scores an organ Dice of {judge['dice_real_test']:.3f} "
        f"on the real test volumes, lesion Dice {format_number(judge['lesion_dice_real_test'], 3)}, and touches "
        f"{format_number(judge['lesion_detection_rate'], 2)} of the {judge['lesions_per_seed']} test lesions."
    ]
    if early:
        said.append(
            f"Early stopping chose a step before the last in {early} of {seeds} seeds (best steps "
            f"{judge['best_steps']}, stopped at {judge['stopped_steps']} of at most {judge['max_steps']})."
        )
    else:
        said.append(
            f"Every seed was still improving at its last step ({judge['max_steps']}): the judge is budget-bound, "
            "and a longer run would score higher."
        )
    real = nan_mean(dice["real_test"]["organ"])
    parts = [f"synthetic volumes of the same label maps {nan_mean(dice['synthetic']['organ']) / real:.3f}"]
    if "oracle" in dice:
        parts.append(f"oracle re-renders (perfect synthesis) {nan_mean(dice['oracle']['organ']) / real:.3f}")
    said.append("Its Dice relative to real test volumes: " + ", ".join(parts) + ".")
    return " ".join(said)


def augmentation_verdict(aug: Mapping[str, Any] | None) -> str:
    """What the augmentation arms show, written from their numbers: can the experiment see a
    benefit at all (the oracle arm), how much of it the autoencoder keeps, and how much the
    synthetic volumes recover."""
    if not aug:
        return "The augmentation experiment did not run (no new anatomies: not a phantom run, or augment=False)."
    arms = aug["arms"]

    def gain(name: str) -> str:
        a = arms[name]
        return f"{a['gain']:+.3f} [{a['gain_ci'][0]:+.3f}, {a['gain_ci'][1]:+.3f}]"

    said = [
        f"Over {aug['n_small']} real cases alone (organ Dice {arms['real_small']['mean']:.3f}), all real cases gain "
        f"{gain('real_all')}."
    ]
    oracle = arms.get("real_small_oracle")
    if oracle is not None:
        sees = oracle["gain_ci"][0] > 0
        said.append(
            f"Perfect renders of {aug['n_extra']['oracle']} new anatomies gain {gain('real_small_oracle')}: "
            + (
                "the experiment can see a benefit of new anatomy."
                if sees
                else "even perfect synthesis shows no benefit distinguishable from zero here, so this experiment "
                "cannot judge the generator's usefulness (too few test cases, judge seeds or steps, or new "
                "anatomy adds nothing the real cases lack)."
            )
        )
    if "real_small_oracle_autoencoded" in arms:
        said.append(f"Through the autoencoder they gain {gain('real_small_oracle_autoencoded')}.")
    synthetic = arms["real_small_synthetic"]
    oracle_sees = oracle is not None and oracle["gain_ci"][0] > 0
    fraction = aug.get("fraction_of_oracle_gain")
    said.append(
        f"The synthetic volumes gain {gain('real_small_synthetic')}"
        + (
            f", {format_number(fraction, 2)} of the oracle arm's gain."
            if oracle_sees and fraction is not None and math.isfinite(fraction)
            else "."
        )
    )
    per_case = aug.get("gain_per_case") or []
    if per_case:
        worse = sum(g < 0 for g in per_case)
        said.append(f"{worse} of the {len(per_case)} test cases score lower with them than without.")
    encoded = arms.get("real_small_oracle_autoencoded")
    lo, hi = synthetic["gain_ci"]
    if (
        encoded is not None
        and synthetic["gain"] < 0
        and encoded["gain"] < 0
        and lo <= encoded["gain"] <= hi
        and not oracle_sees
    ):
        said.append(
            "The oracle renders through the autoencoder lose about as much "
            f"({encoded['gain']:+.3f} against {synthetic['gain']:+.3f}): whatever passes through this VQ-GAN "
            "(its texture, its blur) likely costs the judge more than new anatomy gives it, and the synthetic "
            "volumes carry that cost. Synthetic data does not help here; with an oracle arm at zero, this "
            "experiment cannot say whether a better generator would."
        )
    if "bar_holds" in aug:
        said.append(f"The bar ({aug['bar']}) {'holds' if aug['bar_holds'] else 'does **not** hold'}.")
    return " ".join(said)


def lesion_augmentation_sentence(la: Mapping[str, Any] | None) -> str:
    """What inserting lesions with ``pipe.edit`` into the real-small volumes did to the judge's
    lesion Dice, beside the control (all real cases), written from the numbers: whether any judge
    found a lesion, whether the control shows the experiment can see a lesion gain, and the bar.
    ``la``: the ``lesion_augmentation`` of :func:`medlsdm.evaluation.augmentation.augmentation_experiment`."""
    if not la:
        return (
            "The lesion augmentation did not run (lesion_augmentation=False, no lesion class in the data, or no "
            "augmentation experiment)."
        )
    if "skipped" in la:
        return f"The lesion augmentation arm did not run: {la['skipped']}. Its bar is not met: it was not measured."
    if not la["n_lesion_cases"]:
        return "No test case holds a lesion, so the lesion augmentation cannot be scored here."

    def gain(value, ci) -> str:
        return f"{value:+.3f} " + (
            f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "(no CI: fewer than 2 test cases with a lesion)"
        )

    found, total = la["lesions_found"], la["lesions_total"]
    said = [
        f"{la['n_edits']} real-small volumes with a lesion inserted by `pipe.edit` change the lesion Dice on the "
        f"{la['n_lesion_cases']} test cases with a lesion by {gain(la['gain'], la['gain_ci'])}; the control, all real "
        f"cases with their lesions, by {gain(la['control_gain'], la['control_gain_ci'])}.",
        f"Test lesions found (of {total}, per judge seed): real small {found['real_small']}, with the edits "
        f"{found['real_small_lesion_edits']}, all real {found['real_all']}.",
    ]
    control_sees = bool(la["control_gain_ci"]) and la["control_gain_ci"][0] > 0
    holds = bool(la["gain_ci"]) and la["gain_ci"][0] > 0
    if not any(sum(v) for v in found.values()):
        said.append(
            "No judge in any of these arms found a lesion, so every lesion gain is zero by construction: "
            "at this judge's budget the experiment cannot see lesion augmentation at all."
        )
    elif not control_sees:
        said.append(
            "Even more real lesions give no gain distinguishable from zero, so this experiment cannot judge "
            "the edits either way."
        )
    else:
        said.append(
            "More real lesions help this judge, so the experiment can see a lesion gain; the edits "
            + (
                "give one too."
                if holds
                else "do not give one distinguishable from zero."
                if la["gain_ci"] and la["gain_ci"][1] > 0
                else "give none."
            )
        )
    said.append(f"The bar (a lesion gain with its CI above 0) {'holds' if holds else 'does **not** hold'}.")
    return " ".join(said)


def distance_sentence(m: Mapping[str, Any]) -> str:
    """What the two offline distances say, each beside its real-vs-real reference, written from
    the numbers (``evaluation_metrics`` output): FRD's ratio to its reference, and whether KID's CI
    separates the synthetic from the real volumes at all."""
    said = []
    far = False
    if m.get("frd") is not None and m.get("frd_reference"):
        ratio = m["frd"] / m["frd_reference"]
        far = ratio > 2
        text = (
            f"Radiomics features put the synthetic volumes {ratio:.1f}× as far from the real test volumes as real "
            f"validation volumes are (FRD {m['frd']:.0f} against {m['frd_reference']:.0f})"
        )
        if m.get("frd_oracle") is not None:
            text += f"; oracle re-renders of the same label maps sit at {m['frd_oracle']:.0f}"
            if m["frd_oracle"] <= m["frd_reference"] < m["frd"]:
                text += ", inside the real-vs-real distance: the gap is the generator's, not the phantom's"
        said.append(text + ".")
    if m.get("kid") is not None and m.get("kid_ci") is not None and m.get("kid_reference") is not None:
        lo, hi = m["kid_ci"]
        if not (math.isfinite(lo) and math.isfinite(hi)):
            said.append(
                f"KID on the segmentation network's features is {m['kid']:+.2f} against {m['kid_reference']:+.2f} "
                "for two real sets, without a CI (too few volumes): it cannot say whether the sets differ."
            )
            return " ".join(said)
        blind = lo <= 0 <= hi or lo <= m["kid_reference"] <= hi
        said.append(
            f"KID on the segmentation network's features {'does not separate' if blind else 'separates'} them: "
            f"{m['kid']:+.2f} [{lo:+.2f}, {hi:+.2f}] against {m['kid_reference']:+.2f} for two real sets."
        )
        ref, ora = m["kid_reference"], m.get("kid_oracle")
        if m["kid"] < ref and ora is not None and ora < ref:
            said.append(
                f"The synthetic set scores below two real sets ({m['kid']:+.2f} against {ref:+.2f}) not because it is "
                "more real than real data: it is made from the test label maps themselves, so it shares the test "
                "set's anatomy, which the validation set does not; oracle re-renders of the same maps score "
                f"{ora:+.2f} too."
            )
        if blind and far:
            said.append(
                "The two disagree because they look at different things: a network trained to segment "
                "likely responds to anatomy, which the label maps fix, while radiomics measure intensity "
                "and texture; here FRD is the realism measure and KID an anatomy check."
            )
    return " ".join(said) or "No offline distance was computed."


def lesion_sentence(judge: Mapping[str, Any], lesion_dice: Mapping[str, float]) -> str:
    """What lesion Dice can say in this run: nothing when the judge finds no lesion in the real
    test volumes either. ``judge``: :meth:`SegmentationResult.summary
    <medlsdm.evaluation.run.SegmentationResult.summary>`; ``lesion_dice``: the mean lesion Dice per set."""
    sets = {k: float(v) for k, v in lesion_dice.items() if v is not None}
    values = ", ".join(f"{k.replace('_', ' ')} {format_number(v, 3)}" for k, v in sets.items())
    said = (
        f"Lesion Dice: {values}; the judge touches {format_number(judge['lesion_detection_rate'], 2)} of the "
        f"{judge['lesions_per_seed']} test lesions. "
    )
    if not judge["lesion_detection_rate"] and all(not v for v in sets.values() if math.isfinite(v)):
        said += (
            f"These zeros are not noise: no judge at this budget ({judge['max_steps']} steps) finds a lesion at all, "
            "in real volumes or synthetic ones, so lesion Dice cannot compare the sets here: the judge, not the "
            "generator, sets these zeros."
        )
    elif sets.get("real_test") and math.isfinite(sets.get("synthetic", math.nan)):
        said += f"Synthetic over real: {sets['synthetic'] / sets['real_test']:.2f}."
    return said


def _distances(pc: Mapping[str, Any]) -> dict[str, list[float]]:
    if "distances" in pc:
        return dict(pc["distances"])
    return {
        "positive": pc["positive"]["nn_distance"],
        "negative": pc["negative"]["nn_distance"],
        **{k: c["nn_distance"] for k, c in pc["synthetic"].items()},
    }


def memorisation_sentence(pc: Mapping[str, Any]) -> str:
    """The memorisation check read from its controls: can it fail (copies flagged, fresh renders
    passed), and where the synthetic sets' distances lie between the two controls. ``pc`` is a
    :func:`medlsdm.evaluation.run.memorisation` result or the ``privacy_controls`` entry."""
    flagged = pc.get("synthetic_flagged") or {k: c["fraction_flagged"] for k, c in pc["synthetic"].items()}
    works = pc["positive_flagged"] == 1 and pc["negative_flagged"] == 0
    said = (
        f"The check flags {pc['positive_flagged']:.0%} of the copies and {pc['negative_flagged']:.0%} of the "
        f"negative control ({pc['negative_control_kind']}): "
        + (
            "it can fail, and it does not cry wolf. "
            if works
            else "**its controls do not behave, so its verdict on the synthetic volumes means little.** "
        )
    )
    dist = _distances(pc)
    neg = float(np.median(dist["negative"]))
    parts = [
        f"{k.replace('_', ' ')} {v:.0%} flagged (median distance {float(np.median(dist[k])):.3f})"
        for k, v in flagged.items()
    ]
    said += (
        (
            f"Synthetic volumes: {'; '.join(parts)}, against a threshold of {pc['threshold']:.3f} and a median of "
            f"{neg:.3f} for the negative control."
        )
        if "threshold" in pc
        else f"Synthetic volumes: {'; '.join(parts)}."
    )
    if works and not any(flagged.values()):
        said += (
            " None is closer to a training volume than fresh renderings of the same anatomy would be: no copies found."
        )
    return said


def paper_sentence(m: Mapping[str, Any]) -> str:
    """Our Dice ratio and 3D-FID beside the Med-LSDM abstract's, and why they are not the same numbers."""
    ratio = PAPER["dice_synthetic"] / PAPER["dice_real"]
    said = (
        f"The abstract of {PAPER['source']} reports Dice {PAPER['dice_synthetic']} with synthetic against "
        f"{PAPER['dice_real']} with "
        f"real images on {PAPER['dataset']} (ratio {ratio:.3f}), and a 3D-FID of {PAPER['fid_3d']}. Here the ratio is "
        f"{m['dice_ratio']:.3f}"
    )
    if m.get("dice_ratio_oracle") is not None:
        said += f", and {m['dice_ratio_oracle']:.3f} for perfect synthesis (oracle re-renders)"
    said += f", on {m.get('dataset', 'this dataset')}, with the organ classes only."
    conv = m.get("paper_conventions_table", {}).get("dice")
    if conv:
        said += (
            f" The first judge network's Dice on the synthetic volumes, every foreground class counted, is "
            f"{conv['ours']:.3f}; pooled with the background as the paper's code did, {conv['paper']:.3f}: "
            "background agreement lifts every set toward 1 and "
            "squeezes any ratio toward 1, so the paper's ratio and ours are not the same measurement."
        )
    fid3 = m.get("fid_3d")
    said += (
        f" Our 3D-FID is {'skipped (no MedicalNet weights offline)' if fid3 is None else format(fid3, '.4g')}; the "
        f"paper's {PAPER['fid_3d']} is not comparable with any value: its code computed the statistics over a buffer "
        "with uninitialised rows, on another dataset."
    )
    return said


def takeaways_05(m: Mapping[str, Any]) -> str:
    """The closing cell of notebook 05, from its ``"05_evaluation"`` entry."""
    ci = m["ci"]
    lines = [
        f"Judge Dice (organs, {m['n_test']} test cases): real {m['dice_real_test']:.3f} "
        f"{ci_text(ci.get('dice_real_test'))}, "
        f"synthetic {m['dice_synthetic']:.3f} {ci_text(ci.get('dice_synthetic'))}"
        + (f", oracle {m['dice_oracle']:.3f} {ci_text(ci.get('dice_oracle'))}" if "dice_oracle" in m else "")
        + f"; synthetic over real {m['dice_ratio']:.3f}.",
        lesion_sentence(
            m["judge"],
            {k: m[f"dice_lesion_{k}"] for k in ("real_test", "synthetic", "oracle") if f"dice_lesion_{k}" in m},
        ),
        augmentation_verdict(m["augmentation"]),
        lesion_augmentation_sentence(m.get("lesion_augmentation")),
        memorisation_sentence(m["privacy_controls"]),
        distance_sentence(m),
        paper_sentence(m),
    ]
    return "**Takeaways**\n\n" + "\n".join(f"- {line}" for line in lines)


def quality_sentence(quality: Mapping[str, Any]) -> str:
    """The paired image quality of :func:`medlsdm.evaluation.run.image_quality`: SSIM and PSNR with their
    CI over cases and the cases at either end, and what a paired number can and cannot say."""
    per_case = {m: [v[m] for v in quality["per_case"].values()] for m in ("ssim", "psnr")}
    ci = with_ci(per_case)
    worst = min(quality["per_case"], key=lambda c: quality["per_case"][c]["ssim"])
    best = max(quality["per_case"], key=lambda c: quality["per_case"][c]["ssim"])
    said = (
        f"Over {len(quality['per_case'])} test cases: SSIM {quality['ssim']:.3f} {ci_text(ci['ssim'])}, PSNR "
        f"{quality['psnr']:.2f} dB {ci_text(ci['psnr'])}; from {worst} (SSIM {quality['per_case'][worst]['ssim']:.3f}) "
        f"to {best} ({quality['per_case'][best]['ssim']:.3f}). "
    )
    return said + (
        "A sample can score low here and still be right: the real volume is one draw of the many images its "
        "label map allows, so these numbers rank closeness to that one patient, not realism."
    )
