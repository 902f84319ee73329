"""What the numbers of notebooks 01, 02, 03 and 06 show, in words chosen from the numbers.

Every function here takes what a notebook has just measured (or the entry it writes to
``metrics.json``) and returns a short Markdown paragraph: the comparison, its control and,
where the notebook has the evidence, the likely cause. The words are picked by comparing the
numbers, so the text cannot contradict them (``tests/test_interpret.py`` flips a number and
sees the sentence flip). Notebooks show them with ``display(Markdown(...))``; the
``takeaways_*`` functions write each notebook's closing cell. Notebooks 04 and 07:
:mod:`medlsdm.interpret_synthesis`; notebook 05: :mod:`medlsdm.evaluation.summary`.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np

from .data.splits import shared_patients

#: Below this many dB between own and another case's codes, a decoder hardly needs its latent.
LATENT_MIN_DB = 3.0
#: A learned autoencoder is worth training when it beats average pooling by this many dB.
AUTOENCODER_MIN_GAIN_DB = 1.0


def ci_text(ci: Sequence[float] | None, digits: int = 3) -> str:
    """``[+0.005, +0.095]`` (signed), or ``""`` without a CI."""
    return "" if ci is None else f"[{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]"


def ci_side(ci: Sequence[float] | None) -> str:
    """Where a CI lies against 0: ``"above 0"``, ``"below 0"``, ``"straddles 0"`` (or ``"no CI"``)."""
    if ci is None or not all(math.isfinite(v) for v in ci):
        return "no CI"
    return "above 0" if ci[0] > 0 else "below 0" if ci[1] < 0 else "straddles 0"


def bullets(lines: Sequence[str], title: str = "Takeaways") -> str:
    """A Markdown block: a bold title and one bullet per line (empty lines left out)."""
    return f"**{title}**\n\n" + "\n".join(f"- {line[0].upper()}{line[1:]}" for line in lines if line)


# ---------------------------------------------------------------- 01 · preprocessing


def class_balance_sentence(class_fraction: Mapping[str, float]) -> str:
    """How unequal the classes are: the largest beside the two smallest, and the ratio."""
    ranked = sorted(class_fraction.items(), key=lambda kv: kv[1], reverse=True)
    (big, f_big), small = ranked[0], ranked[-2:][::-1]
    ratio = f_big / small[0][1] if small[0][1] > 0 else math.inf
    said = (
        f"{big[0].upper()}{big[1:]} fills {100 * f_big:.1f} % of the voxels, {small[0][0]} {100 * small[0][1]:.2f} "
        "% and "
        f"{small[1][0]} {100 * small[1][1]:.2f} %: the smallest class has {ratio:.0f}× fewer voxels than the largest."
    )
    if ratio >= 100:
        said += (
            " Anything averaged over voxels (a loss, a pooled Dice) is decided by the large classes; the small ones "
            "are where a model and a segmentation judge (notebook 05) fail first."
        )
    else:
        said += " The classes are of comparable size: no class is likely to be drowned by the others."
    return said


def split_sentence(split: Mapping[str, Sequence[str]], patient_of: Mapping[str, str]) -> str:
    """Whether any patient sits in two splits, and whether the check could have failed at all
    (a dataset with one case per patient makes a case-level split patient-level by construction)."""
    patients = {name: {patient_of[c] for c in ids} for name, ids in split.items()}
    shared = sorted(shared_patients(split, patient_of.items()))
    n_cases = sum(len(ids) for ids in split.values())
    n_patients = len(set().union(*patients.values())) if patients else 0
    counts = ", ".join(f"{len(ids)} {name}" for name, ids in split.items())
    said = f"{n_cases} cases of {n_patients} patients: {counts}. "
    if shared:
        said += (
            f"**{len(shared)} patients appear in two splits** ({', '.join(shared[:5])}): "
            "the test set would measure memory."
        )
    else:
        said += "No patient appears in two splits."
        if n_patients == n_cases:
            said += (
                " Every patient has one case here, so any split of cases is also a split of patients and this "
                "check cannot fail on this dataset; it matters for data with follow-up scans."
            )
    return said


def painting_sentence(painting_r2: float) -> str:
    """What label painting leaves for a generator to learn."""
    left = 1 - painting_r2
    said = (
        f"Painting each class with its training mean explains {100 * painting_r2:.1f} % of the voxel variance inside "
        f"the body of the test cases; the other {100 * left:.1f} % (hidden appearance factors, noise, unlabelled "
        "anatomy) is what a generator must add beyond painting its label map."
    )
    if painting_r2 > 0.95:
        said += " That is almost nothing: on this data a generator that paints its labels would look excellent."
    elif painting_r2 < 0.3:
        said += (
            " The label map fixes little of the image: "
            "paired metrics against the one real volume will be low for any model."
        )
    return said


def takeaways_01(m: Mapping) -> str:
    """The closing cell of notebook 01, from its ``"01_preprocessing"`` entry."""
    return bullets(
        [
            f"{m['n_cases']} {m['dataset']} cases, preprocessed to blocks of {m['block_shape']} voxels at "
            f"{m['spacing']} mm, "
            f"split {m['n_train']} / {m['n_val']} / {m['n_test']} (train / validation / test) by patient.",
            class_balance_sentence(m["class_fraction"]),
            painting_sentence(m["painting_r2"]),
        ]
    )


# ---------------------------------------------------------------- 02 · the VQ-GAN


def reconstruction_sentence(result: Mapping) -> str:
    """The held-out reconstruction against average pooling at the same compression (the control)."""
    gain = result["psnr"] - result["baseline_psnr"]
    said = (
        f"On the validation cases the autoencoder reconstructs at PSNR {result['psnr']:.2f} dB and SSIM "
        f"{result['ssim']:.3f}, against {result['baseline_psnr']:.2f} dB and {result['baseline_ssim']:.3f} for "
        f"average pooling with the same compression (the control): {gain:+.2f} dB. "
    )
    if gain >= AUTOENCODER_MIN_GAIN_DB and result["ssim"] > result["baseline_ssim"]:
        said += "The learned codes hold more than block averages do."
    else:
        said += (
            "It does not clearly beat block averages: train longer (more `steps`) before building a diffusion "
            "model on this latent."
        )
    return said


def latent_sentence(ablation: Mapping[str, float]) -> str:
    """Whether the decoder needs its latent (own vs another case's vs random codes, PSNR inside the body)."""
    drop = ablation["own"] - ablation["other"]
    said = (
        f"Decoded with its own codes a validation case scores {ablation['own']:.1f} dB inside the body, with another "
        f"case's codes {ablation['other']:.1f} dB and with random codes {ablation['random']:.1f} dB: "
        f"{drop:.1f} dB lost to codes that are not its own. "
    )
    if drop >= LATENT_MIN_DB:
        said += "The decoder needs its latent, so what the diffusion model of notebook 03 produces decides the image."
    else:
        said += (
            f"Less than {LATENT_MIN_DB:.0f} dB: the decoder makes nearly the same volume from any codes, i.e. it "
            "paints the label map, and a diffusion model in this latent space has little to decide."
        )
    return said


def codebook_sentence(usage: float, perplexity: float, num_embeddings: int) -> str:
    """Codebook health: the share of codes used and the perplexity (the effective number of codes)."""
    share = perplexity / num_embeddings
    said = (
        f"The held-out cases use {100 * usage:.0f} % of the {num_embeddings} codes, with a perplexity of "
        f"{perplexity:.0f} ({100 * share:.0f} % of the codebook in effective use): "
    )
    if share < 0.1:
        return said + "the codebook has collapsed onto a few codes; the restarts are not keeping it alive."
    return said + "no collapse; the EMA updates and dead-code restarts keep the codebook spread."


def takeaways_02(m: Mapping, num_embeddings: int) -> str:
    """The closing cell of notebook 02, from its ``"02_vqgan"`` entry and the codebook size."""
    body = m["body"]
    res = body.get("painting + pooled residual")
    lines = [reconstruction_sentence(m), latent_sentence(m["latent_ablation"])]
    if res is not None:
        beats = {k: body["VQ-GAN"][k] > res[k] for k in ("psnr", "ssim")}
        lines.append(
            f"Against painting + pooled residual (the label map plus as many numbers as the latent holds) it "
            f"{'wins' if beats['psnr'] else 'loses'} on PSNR ({body['VQ-GAN']['psnr']:.2f} vs {res['psnr']:.2f} dB) "
            f"and {'wins' if beats['ssim'] else 'loses'} on SSIM ({body['VQ-GAN']['ssim']:.3f} vs {res['ssim']:.3f})."
        )
    tex = m.get("texture")
    if tex:
        lines.append(
            f"Texture over the originals': noise {tex['noise_ratio']:.2f}×, high-frequency power "
            f"{tex['hf_power_ratio']:.2f}× (1 is right): every sample of notebook 04 inherits this decoder's texture."
        )
    lines.append(codebook_sentence(m["codebook_usage"], m["perplexity"], num_embeddings))
    return bullets(lines)


# ---------------------------------------------------------------- 03 · latent diffusion


def latent_scale_sentence(channel_std: Sequence[float]) -> str:
    """How unequal the latent channels' spreads are, and what one scale for all would do."""
    std = np.asarray(channel_std, dtype=np.float64)
    ratio = std.max() / std.min() if std.min() > 0 else math.inf
    said = (
        f"The {len(std)} latent channels' standard deviations run from {std.min():.2f} (channel {int(std.argmin())}) "
        f"to {std.max():.2f} (channel {int(std.argmax())}), {ratio:.1f}× apart. "
    )
    if ratio >= 2:
        said += (
            "With one scale for all, the narrow channel's signal would be drowned by the noise at a lower t than the "
            "wide one's; per-channel standardisation puts every channel on the schedule's unit variance."
        )
    else:
        said += "One scale for all channels would serve nearly as well here."
    return said


def loss_sentence(losses: Sequence[float], prediction_type: str, window: int = 5) -> str:
    """Where the denoising loss started and ended (means of the first and last ``window`` logged
    values), against the loss of predicting zero: the target (ε, or v for unit-variance latents)
    has unit variance, so a network that learnt nothing scores about 1."""
    a = np.asarray(losses, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return "No loss was logged."
    first, last = float(a[:window].mean()), float(a[-window:].mean())
    target = "velocity v" if prediction_type == "v_prediction" else "noise ε"
    said = (
        f"The loss fell from {first:.3f} (first logged values) to {last:.3f} (last ones); predicting zero scores about "
        f"1 (the {target} has unit variance), so the network explains about {100 * (1 - last):.0f} % of its target's "
        "variance, averaged over timesteps. "
    )
    if last >= 0.9:
        said += "That is little more than nothing: train longer, or check the learning rate."
    elif last > 0.8 * first:
        said += "It had not fallen much by the end: more steps would likely lower it."
    else:
        said += (
            "Part of what is left cannot be learnt at all: at low noise the exact noise is not in the latent, at high "
            "noise the hidden factors are not in the label map."
        )
    return said


def takeaways_03(result: Mapping, losses: Sequence[float] | None = None) -> str:
    """The closing cell of notebook 03, from its ``"03_diffusion"`` entry (and the logged losses)."""
    lines = [
        f"{result['steps']} steps of a {result['conditioning']}-conditioned UNet with {result['prediction_type']} "
        f"in {result['train_seconds']:.0f} s; final loss {result['final_loss']:.3f} against about 1 for predicting "
        "zero."
    ]
    if losses is not None:
        lines.append(loss_sentence(losses, result["prediction_type"]))
    lines.append(
        "The loss says how well the network denoises, not whether its samples are right: notebook 04 judges "
        "the samples against the oracle."
    )
    return bullets(lines)


# ---------------------------------------------------------------- 06 · the cardiac 2-D model


def slice_order_sentence(slices: Iterable[tuple[str, np.ndarray]]) -> str:
    """The direction of the slice index, read off the labelled area of each subject's slices (the
    ventricles narrow toward the apex). ``slices``: ``(subject, label map)`` pairs in index order."""
    areas: dict[str, list[int]] = {}
    for case, label in slices:
        areas.setdefault(case, []).append(int((np.asarray(label) > 0).sum()))
    rising = sum(a[-1] > a[0] for a in areas.values())
    falling = sum(a[-1] < a[0] for a in areas.values())
    if rising == falling:
        return (
            f"The labelled area neither grows nor shrinks along the slice index in most of the {len(areas)} subjects."
        )
    direction, how = ("apex to base", "grows") if rising > falling else ("base to apex", "shrinks")
    return (
        f"In {max(rising, falling)} of {len(areas)} subjects the labelled area {how} from the first slice to the last, "
        f"so the slice index runs from {direction} here (the ventricles narrow toward the apex)."
    )


def mode_loss_sentence(final_loss: Mapping[str, float]) -> str:
    """The final denoising losses of the conditioning modes (same network, steps and seed): the
    more a condition tells, the less of the noise is left to guess."""
    ranked = sorted(final_loss, key=final_loss.get)
    said = (
        "Final denoising loss: "
        + ", ".join(f"{m} {final_loss[m]:.4f}" for m in ranked)
        + " (lowest first; about 1 for predicting zero). "
    )
    if len(ranked) > 1:
        spread = final_loss[ranked[-1]] - final_loss[ranked[0]]
        if spread < 0.02 * final_loss[ranked[-1]]:
            said += (
                f"The modes end within {spread:.4f} of each other: no condition has made a difference to the loss yet."
            )
        else:
            said += (
                f"Here {ranked[0]} leaves the least to guess, {ranked[-1]} the most; a lower loss is a better denoiser "
                "of these latents, which section 7 checks against the real slices."
            )
    return said


def vqvae_sentence(val: Mapping[str, float], num_embeddings: int) -> str:
    """The 2-D VQ-VAE's held-out reconstruction against its pooling baseline, and its codebook."""
    gain = val["val_psnr"] - val["val_baseline_psnr"]
    said = (
        f"Held-out slices are reconstructed at {val['val_psnr']:.2f} dB, {gain:+.2f} dB over average pooling at the "
        f"same compression, SSIM {val['val_ssim']:.3f}. "
    )
    said += codebook_sentence(val["val_usage"], val["val_perplexity"], num_embeddings)
    return said


def ablation_sentence(scores: Mapping[str, Mapping[str, float]], ceiling: Mapping[str, float]) -> str:
    """What each condition brings (SSIM, NMSE, Dice) and how the modes stand against the VQ-VAE
    reconstruction: a ceiling for realism, but not for Dice, which measures agreement with the label map."""
    said = []
    if "edges+semantic" in scores and "semantic" in scores:
        both, sem = scores["edges+semantic"], scores["semantic"]
        helps = both["ssim"] > sem["ssim"] and both["nmse"] < sem["nmse"]
        said.append(
            f"Adding the edge map to the semantic map {'raises' if both['ssim'] > sem['ssim'] else 'does not raise'} "
            f"SSIM ({sem['ssim']:.3f} → {both['ssim']:.3f}) and "
            f"{'lowers' if both['nmse'] < sem['nmse'] else 'does not lower'} "
            f"NMSE ({sem['nmse']:.3f} → {both['nmse']:.3f})"
            + (": the edges carry what four classes cannot (lungs, chest wall, exact outlines)." if helps else ".")
        )
    if "edges" in scores and "semantic" in scores:
        e, s = scores["edges"]["dice"], scores["semantic"]["dice"]
        said.append(
            f"The segmentation network finds the classes {'better' if s > e else 'no better'} in slices made from "
            f"the semantic map (Dice {s:.3f}) than from edges alone ({e:.3f})"
            + (": edges outline the heart but do not say which region is which." if s > e else ".")
        )
    above = [m for m, v in scores.items() if v["dice"] > ceiling["dice"]]
    if above:
        said.append(
            f"Slices of the {' and '.join(above)} {'model scores' if len(above) == 1 else 'models score'} a higher "
            "Dice than the VQ-VAE "
            f"reconstruction ({', '.join(format(scores[m]['dice'], '.3f') for m in above)} vs {ceiling['dice']:.3f}). "
            "Dice measures agreement with the label map the slice was made from, and a model conditioned on that "
            "map likely paints its regions more cleanly than a real slice shows them, so the network finds them "
            "more easily: the reconstruction is a ceiling of realism, not of Dice."
        )
        below = all(v["ssim"] < ceiling["ssim"] and v["fd_seg"] > ceiling["fd_seg"] for v in scores.values())
        said.append(
            f"On realism every mode stays below the reconstruction's SSIM ({ceiling['ssim']:.3f}) and above its "
            f"FD-seg ({ceiling['fd_seg']:.3f}), as a ceiling should."
            if below
            else "Some mode also reaches the reconstruction's SSIM or FD-seg: check the evaluation before trusting it."
        )
    best_fd = min(scores, key=lambda m: scores[m]["fd_seg"])
    best_ssim = max(scores, key=lambda m: scores[m]["ssim"])
    if best_fd == best_ssim:
        said.append(f"FD-seg and SSIM agree: {best_fd} is closest to the real slices.")
    else:
        said.append(
            f"FD-seg ranks {best_fd} closest to the real slices ({scores[best_fd]['fd_seg']:.2f} against "
            f"{scores[best_ssim]['fd_seg']:.2f} for {best_ssim}), SSIM ranks {best_ssim} closest: they disagree, since "
            "FD-seg compares the two sets' feature statistics in one small network while SSIM compares each slice "
            "with its own real one."
        )
    return " ".join(said)


def takeaways_06(result: Mapping) -> str:
    """The closing cell of notebook 06, from its ``"06_cardiac_2d"`` entry."""
    scores, ceiling = result["ablation"], result["reconstruction"]
    best = max(scores, key=lambda m: scores[m]["ssim"])
    return bullets(
        [
            f"{result['n_slices']} slices of {result['size']}×{result['size']} pixels ({result['dataset']}); "
            f"{result['n_test_slices']} held-out slices judge {len(scores)} models trained alike.",
            f"Closest to the real slices on SSIM: {best} ({scores[best]['ssim']:.3f}; the VQ-VAE ceiling "
            f"{ceiling['ssim']:.3f}).",
            ablation_sentence(scores, ceiling),
            f"FID: {result['fid']}.",
        ]
    )
