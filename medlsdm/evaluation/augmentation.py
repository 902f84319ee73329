"""The augmentation experiment of notebook 05: does synthetic data from new anatomies help a judge
trained on few real cases, and how much could perfect synthesis help?

:func:`augmentation_extras` builds the added sets, all on the same new anatomies
(:func:`medlsdm.evaluation.run.new_anatomy_labels`): their oracle renders, those through the VQ-GAN, and
the pipeline's samples; :func:`augmentation_experiment` trains the judge
(:func:`medlsdm.evaluation.cases.train_judges`) on each arm and compares them on the real test cases.
:func:`lesion_edits` makes the lesion augmentation's set: the real-small cases with a lesion
inserted by :meth:`MedLSDMPipeline.edit`, scored by the lesion Dice they add;
:func:`oracle_lesion_edits` its control, the same lesions drawn and rendered by the phantom itself.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..atomic import read_json
from ..data.phantom import phantom_version, render_case, torso
from ..data.phantom.oracle import phantom_index, phantom_source, preprocess_like_run
from ..errors import ConfigError, DataError
from ..metrics.statistics import hierarchical_bootstrap_ci, mean_sd
from ..pipelines.synthesis import use_scheduler
from ..rundir import RunDir
from ..training.judge import JUDGE_DEFAULTS
from .cases import Cases, dice_over_seeds, read_cases, train_judges
from .edits import edit_with_lesion, lesion_site
from .reconstruction import reconstruct
from .summary import nan_mean

#: The augmentation bar: share of the oracle arm's gain that the synthetic arm must recover.
AUGMENTATION_BAR = 0.5
#: The extra sets of the augmentation experiment, each added to the real-small cases in an arm of its own.
EXTRA_SETS = ("oracle", "oracle_autoencoded", "synthetic", "lesion_edits")
#: Radius range of the lesions :func:`lesion_edits` inserts: the phantom's own (``data_cards/phantom.md``).
LESION_RADIUS_MM = torso.LESION_RADIUS_MM
#: The arms pooled over generator and judge seeds, as ``benchmarks/bench_augmentation.py report`` writes them,
#: one file per VQ-GAN decoder of the generators (notebook 02's ``decoder_type``). The SPADE decoder's (the
#: demo's) is on the demo's data (phantom 5) with the lesion judge of notebook 05's section 3; the normal
#: decoder's is older (phantom 4, BasicUNet judges), as is ``augmentation_spade.json``, kept for the record.
BENCHMARKS = {
    decoder: Path(__file__).resolve().parents[2] / "benchmarks" / "results" / name
    for decoder, name in (("normal", "augmentation.json"), ("spade", "lesion_augmentation.json"))
}


def new_anatomy_oracle(run: RunDir, ids: Sequence[str]) -> Cases:
    """The oracle renders of new anatomies :func:`medlsdm.evaluation.run.new_anatomy_labels` wrote, with their
    label maps."""
    folder = run.eval_samples / "new_anatomies"
    return read_cases([folder / "oracle" / f"{c}.nii.gz" for c in ids], [folder / f"{c}.nii.gz" for c in ids], ids)


def augmentation_extras(run: RunDir, pipe, new_synthetic: Cases) -> dict[str, Cases]:
    """The extra training sets of :func:`augmentation_experiment`, all on the same new anatomies:
    ``oracle`` (each anatomy rendered with its own appearance: what a perfect generator could give),
    ``oracle_autoencoded`` (those renders through the pipeline's VQ-GAN: the autoencoder's ceiling)
    and ``synthetic`` (the pipeline's samples)."""

    oracle = new_anatomy_oracle(run, new_synthetic.ids)
    coded = reconstruct(pipe.vqgan, oracle.images, oracle.labels).images
    return {
        "oracle": oracle,
        "oracle_autoencoded": Cases(oracle.ids, list(coded), oracle.labels, oracle.affines),
        "synthetic": new_synthetic,
    }


def lesion_edits(
    pipe,
    cases: Cases,
    class_names: Sequence[str],
    spacing: Sequence[float],
    *,
    organ: str = "liver",
    radius_mm: Sequence[float] = LESION_RADIUS_MM,
    scheduler: str = "ddim",
    steps: int = 10,
    seed: int = 0,
) -> Cases:
    """The lesion augmentation's extra set: each case that has ``organ``, once more, with a
    spherical lesion inserted deep in that organ by :meth:`MedLSDMPipeline.edit`
    (:func:`medlsdm.evaluation.edits.edit_with_lesion`; radius uniform in ``radius_mm``, edit
    noise and radius seeded by ``seed`` and the case's place; ``steps`` of ``scheduler``). Ids
    get the suffix ``+lesion``.

    Raises:
        DataError: ``class_names`` has no ``"lesion"`` or no ``organ`` class, or no case has
            a voxel of ``organ`` (before any edit).
    """

    keep, radii = _lesion_cases(cases, class_names, organ, radius_mm, seed)
    use_scheduler(pipe, scheduler)
    edits = {
        i: edit_with_lesion(
            pipe,
            cases.images[i],
            cases.labels[i],
            organ_class=class_names.index(organ),
            lesion_class=class_names.index("lesion"),
            radius_mm=float(radii[i]),
            spacing=spacing,
            steps=steps,
            seed=seed + i,
        )
        for i in keep
    }
    return Cases(
        [f"{cases.ids[i]}+lesion" for i in keep],
        [edits[i]["edited"].astype(np.float32) for i in keep],
        [edits[i]["labels"] for i in keep],
        [cases.affines[i] for i in keep],
    )


def _lesion_cases(
    cases: Cases, class_names: Sequence[str], organ: str, radius_mm: Sequence[float], seed: int
) -> tuple[list[int], np.ndarray]:
    """The cases a lesion goes into (those with a voxel of ``organ``) and each case's radius (mm),
    uniform in ``radius_mm``, seeded by ``seed``: the same for :func:`lesion_edits` and
    :func:`oracle_lesion_edits`.

    Raises:
        DataError: ``class_names`` has no ``"lesion"`` or no ``organ`` class, or no case has a voxel of ``organ``.
    """
    missing = [c for c in ("lesion", organ) if c not in class_names]
    keep = [
        i for i, lab in enumerate(cases.labels) if not missing and (np.asarray(lab) == class_names.index(organ)).any()
    ]
    if missing or not keep:
        raise DataError(
            f"lesion edits: {f'no class {missing}' if missing else f'no case has a voxel of {organ!r}'} "
            f"(classes {list(class_names)})"
        )
    return keep, np.random.default_rng(seed).uniform(*radius_mm, size=len(cases))


def oracle_lesion_edits(
    run: RunDir,
    cases: Cases,
    class_names: Sequence[str],
    *,
    radius_mm: Sequence[float] = LESION_RADIUS_MM,
    seed: int = 0,
) -> Cases:
    """The perfect lesion edit, the control of :func:`lesion_edits`: the same phantom cases with a
    liver lesion of the same radius drawn by the phantom itself.

    Each case's own anatomy gets one more lesion where :func:`lesion_edits` puts it (where the liver
    of the stored label map lies deepest, :func:`~medlsdm.evaluation.edits.lesion_site`), drawn as the phantom draws
    its lesions (:func:`~medlsdm.data.phantom.torso.add_liver_lesion`: rim, and a necrotic core of a
    fraction uniform in :data:`~medlsdm.data.phantom.torso.LESION_NECROSIS` of the radius), and is
    rendered with the case's own factors, texture and noise
    (:func:`~medlsdm.data.phantom.render_case` ``edit=``), then preprocessed as notebook 01 did: the
    volume changes only in and around the lesion. Ids get the suffix ``+lesion``.

    Raises:
        ConfigError: the run's data is not a torso phantom; DataError: as :func:`lesion_edits`, or a
            case's label map away from the new lesion differs from the stored one (rerun notebook 01).
    """
    keep, radii = _lesion_cases(cases, class_names, "liver", radius_mm, seed)
    necrosis = np.random.default_rng([seed, 1]).uniform(*torso.LESION_NECROSIS, size=len(cases))
    source = phantom_source(run.data)
    if source["kind"] != "torso-ct":
        raise ConfigError(f"{run.data}: oracle lesion edits need the torso-ct phantom, this run's is {source['kind']}")
    manifest = source["manifest"]
    entries = {e.case_id: e for e in manifest.cases}
    liver, lesion = class_names.index("liver"), class_names.index("lesion")
    images, labels = [], []
    for i in keep:
        site = lesion_site(cases.labels[i], liver, manifest.spacing)  # where lesion_edits puts it
        world = np.asarray(cases.affines[i], float) @ [*site[::-1], 1.0]  # the affine maps (x, y, z) = (w, h, d)

        def edit(anatomy, world=world, r=float(radii[i]), n=float(necrosis[i])):
            centre = (np.linalg.inv(anatomy.affine) @ world)[:3]  # the site on the phantom's grid
            return torso.add_liver_lesion(anatomy, centre, r, n)

        image, label, affine, _ = render_case(
            "torso-ct", source["seed"], phantom_index(entries[cases.ids[i]]), source.get("shape"), edit=edit
        )
        block = preprocess_like_run(manifest, image, label, affine)
        stored = np.asarray(cases.labels[i])
        if (
            not np.array_equal(np.where(block.label == lesion, stored, block.label), stored)
            or not (block.label[stored == lesion] == lesion).all()
        ):
            raise DataError(
                f"{cases.ids[i]}: away from the new lesion the re-rendered label map differs from the stored one; "
                "rerun notebook 01 (the phantom or the preprocessing changed)"
            )
        images.append(block.image.astype(np.float32))
        labels.append(block.label.astype(np.int64))
    return Cases([f"{cases.ids[i]}+lesion" for i in keep], images, labels, [cases.affines[i] for i in keep])


def lesion_arm_skipped(setting: bool | None, real_all: Mapping[str, Any], class_names: Sequence[str]) -> str | None:
    """Why the lesion augmentation arm does not run, or ``None`` when it runs.

    ``setting`` (notebook 05's ``lesion_augmentation``): ``True`` runs it, ``False`` does not,
    ``None`` runs it when the judge trained on all real cases (``real_all``:
    :func:`medlsdm.evaluation.cases.dice_over_seeds`), the arm's positive control, found at least one
    test lesion. When even that judge finds none, every arm's lesion Dice is 0 and the arm would
    spend its judges on a gain that is 0 by construction."""
    if "lesion" not in class_names:
        return "the data has no lesion class"
    if setting is False:
        return "lesion_augmentation=False"
    if setting is None and not sum(real_all["lesions_found"]):
        return (
            f"the judge trained on all real cases (the arm's positive control) found 0 of "
            f"{real_all['lesions_total'][0]} test lesions in each of its {len(real_all['lesions_found'])} seeds, so "
            "every arm's lesion gain would be 0 by construction; set lesion_augmentation=True to run it anyway, "
            "or give the judge a recipe that finds lesions"
        )
    return None


def lesion_gain(
    arm: Mapping[str, Any], base: Mapping[str, Any], test: Cases, class_names: Sequence[str], *, seed: int = 0
) -> dict[str, Any]:
    """Lesion Dice gain of an arm over ``base`` (both :func:`medlsdm.evaluation.cases.dice_over_seeds` on
    ``test``), on the test cases whose label map holds a lesion (there the Dice is defined
    whatever is predicted), with its hierarchical-bootstrap CI over those cases and the judge
    seeds (``None`` with fewer than 2 such cases)."""

    lesion = list(class_names).index("lesion") if "lesion" in class_names else None
    cols = [j for j, lab in enumerate(test.labels) if lesion is not None and (np.asarray(lab) == lesion).any()]
    if not cols:
        return {"lesion_gain": math.nan, "lesion_gain_ci": None, "n_lesion_cases": 0}
    a, b = (np.asarray(d["lesion_by_seed"], float)[:, cols] for d in (arm, base))
    return {
        "lesion_gain": float(a.mean() - b.mean()),
        "lesion_gain_ci": list(hierarchical_bootstrap_ci(a, b, seed=seed)) if len(cols) >= 2 else None,
        "lesion_per_case": (a.mean(0) - b.mean(0)).tolist(),
        "n_lesion_cases": len(cols),
        "lesions_total": list(arm["lesions_total"]),
    }


def augmentation_experiment(
    train: Cases,
    val: Cases,
    test: Cases,
    extras: Mapping[str, Cases],
    class_names: Sequence[str],
    real_all: Mapping[str, Any],
    *,
    n_small: int = 4,
    seeds: Sequence[int] = (0, 1),
    options: Mapping[str, Any] | None = None,
    seed: int = 0,
    progress: bool = True,
    lesion_skipped: str | None = None,
) -> dict[str, Any]:
    """Does synthetic data from *new* anatomies help a judge trained on few real cases, and how
    much could it?

    Arms, each with the same judge recipe, steps, seeds and early stopping on validation:
    ``real_small`` (the first ``n_small`` training cases), ``real_small_<extra>`` for each set of
    ``extras`` (:func:`augmentation_extras`: oracle renders, oracle renders through the
    autoencoder, synthetic volumes of the same new anatomies; the judge's ``mix`` share of every
    batch comes from the extra set) and ``real_all`` (``real_all``: the judge of
    :func:`medlsdm.evaluation.run.segmentation_experiment` on the real test cases). Per test case the organ Dice
    averaged
    over seeds; each gain is the paired difference to ``real_small``, its CI resampling the test
    cases and each arm's judge seeds together
    (:func:`~medlsdm.metrics.statistics.hierarchical_bootstrap_ci`). ``fraction_of_oracle_gain``:
    the synthetic arm's mean gain over the oracle arm's. ``bar_holds``: the oracle arm's gain with a
    CI above 0 (else its share is a ratio to noise), at least :data:`AUGMENTATION_BAR` of it
    recovered, and the synthetic gain's CI above 0.
    Every arm also gets its lesion Dice gain (:func:`lesion_gain`); with a ``lesion_edits`` extra
    set (:func:`lesion_edits`), ``lesion_augmentation`` holds that arm's lesion gain beside the
    control's (``real_all``: the other real training cases, with their lesions) and the lesions
    each arm's judges found; without it, ``lesion_skipped`` (:func:`lesion_arm_skipped`) says why.
    """

    small = train.head(n_small)
    if len(small) < 1 or not extras or min(len(c) for c in extras.values()) < 1:
        raise DataError(
            f"augmentation: needs training cases and extra volumes, got {len(small)} and "
            f"{ {k: len(c) for k, c in extras.items()} }"
        )
    k = len(class_names)
    dice = {}
    for name, extra in {"real_small": None, **{f"real_small_{n}": c for n, c in extras.items()}}.items():
        fits = train_judges(small, val, k, seeds=seeds, options=options or {}, progress=progress, extra=extra)
        dice[name] = dice_over_seeds([f.model for f in fits], test, class_names)
    dice["real_all"] = dict(real_all)
    base = np.asarray(dice["real_small"]["organ"])
    gains = {
        name: {
            "gain": float(np.mean(np.asarray(d["organ"]) - base)),
            "gain_ci": list(
                hierarchical_bootstrap_ci(d["organ_by_seed"], dice["real_small"]["organ_by_seed"], seed=seed)
            ),
            "per_case": (np.asarray(d["organ"]) - base).tolist(),
        }
        for name, d in dice.items()
        if name != "real_small"
    }
    lesion = {
        name: lesion_gain(d, dice["real_small"], test, class_names, seed=seed)
        for name, d in dice.items()
        if name != "real_small"
    }
    arms = {
        name: {
            "mean": nan_mean(d["organ"]),
            "lesion": nan_mean(d["lesion"]),
            "sd_seeds": mean_sd(d["organ_per_seed"])[1] if len(d["organ_per_seed"]) > 1 else math.nan,
            "per_case": d["organ"],
            "lesions_found": list(d["lesions_found"]),
            **gains.get(name, {}),
            **lesion.get(name, {}),
        }
        for name, d in dice.items()
    }
    out = {
        "arms": arms,
        "n_small": len(small),
        "n_extra": {name: len(c) for name, c in extras.items()},
        "mix": float({**JUDGE_DEFAULTS, **(options or {})}["mix"]),
    }
    if "real_small_lesion_edits" in lesion:
        edits, control = lesion["real_small_lesion_edits"], lesion["real_all"]
        out["lesion_augmentation"] = {
            "gain": edits["lesion_gain"],
            "gain_ci": edits["lesion_gain_ci"],
            "per_case": edits.get("lesion_per_case"),
            "n_lesion_cases": edits["n_lesion_cases"],
            "n_edits": len(extras["lesion_edits"]),
            "control_gain": control["lesion_gain"],
            "control_gain_ci": control["lesion_gain_ci"],
            "lesions_found": {
                name: list(dice[name]["lesions_found"])
                for name in ("real_small", "real_small_lesion_edits", "real_all")
            },
            "lesions_total": int(dice["real_small"]["lesions_total"][0]),
        }
    elif lesion_skipped:
        out["lesion_augmentation"] = {
            "skipped": lesion_skipped,
            "lesions_total": int(real_all["lesions_total"][0]),
            "lesions_found": {"real_all": list(real_all["lesions_found"])},
        }
    syn, orc = gains.get("real_small_synthetic"), gains.get("real_small_oracle")
    if syn is not None:
        out.update(gain=syn["gain"], gain_ci=syn["gain_ci"], gain_per_case=syn["per_case"])
    if orc is not None:
        out.update(oracle_gain=orc["gain"], oracle_gain_ci=orc["gain_ci"])
    if syn is not None and orc is not None:
        out["fraction_of_oracle_gain"] = syn["gain"] / orc["gain"] if orc["gain"] > 0 else math.nan
        # a share of a gain the experiment cannot see (oracle CI reaching 0) is no evidence: the bar needs both
        out["bar_holds"] = bool(
            orc["gain_ci"][0] > 0 and out["fraction_of_oracle_gain"] >= AUGMENTATION_BAR and syn["gain_ci"][0] > 0
        )
        out["bar"] = (
            f"the oracle arm's gain with a CI above 0, >= {AUGMENTATION_BAR:.0%} of it recovered, and the CI of "
            "the synthetic arm's gain above 0"
        )
    return out


#: What a benchmark-only arm is, where :func:`benchmark_sentence` names it.
_GLOSS = {
    "real_small_borrowed_codes": " (new anatomies decoded from a real case's codes: no diffusion model)",
    "real_small_lesion_edits": " (a lesion inserted by pipe.edit)",
    "real_small_oracle_lesion_edits": " (the same lesions drawn by the phantom: a perfect edit)",
}


def _gain(a: Mapping[str, Any], key: str = "gain") -> str:
    return f"{a[key]:+.3f} [{a[key + '_ci'][0]:+.3f}, {a[key + '_ci'][1]:+.3f}]"


def generator_settings(run: RunDir, pipe) -> dict[str, Any]:
    """What a benchmark of the augmentation arms records of each generator: the VQ-GAN's decoder
    (``pipe``'s) and training steps (notebook 02: ``steps``, ``disc_start``) and the diffusion model's
    (notebook 03), from the run's ``train_params.json`` files (None where a run lacks them, e.g. one
    unpacked from a pack), and the data: ``phantom``, the version of the phantom generator that made
    the run's data (its ``phantom.json``; None on real data)."""
    vqgan, diffusion = (
        read_json(path) if (path := folder / "train_params.json").is_file() else {}
        for folder in (run.vqgan, run.diffusion)
    )
    return {
        "decoder": pipe.vqgan.config.decoder_type,
        "vqgan_steps": vqgan.get("steps"),
        "disc_start": vqgan.get("disc_start"),
        "diffusion_steps": diffusion.get("steps"),
        "phantom": phantom_version(run.data_root()),
    }


def _generator(settings: Mapping[str, Any]) -> str:
    def steps(key: str) -> str:
        return f"{settings[key]}" if settings.get(key) is not None else "?"

    data = f", phantom version {settings['phantom']}" if settings.get("phantom") is not None else ""
    return (
        f"{settings['decoder']} decoder, {steps('vqgan_steps')} VQ-GAN steps (PatchGANs from {steps('disc_start')}), "
        f"{steps('diffusion_steps')} diffusion steps{data}"
    )


def benchmark_sentence(
    aug: Mapping[str, Any] | None, generator: Mapping[str, Any], paths: Mapping[str, os.PathLike] = BENCHMARKS
) -> str:
    """This run's augmentation gains (one generator, this notebook's judge) beside the benchmark of
    generators with the same VQ-GAN decoder (``paths[generator["decoder"]]``: the arms pooled over its
    generator and judge seeds), each with its CI, and whether the two give an arm the same verdict:
    helps (CI above 0), hurts (CI below 0), or no clear effect; the benchmark's generator settings where
    they differ from this run's (``generator``, :func:`generator_settings`); the benchmark's share of
    the oracle arm's gain and its lesion Dice gains, where it has them; then what the benchmark of the
    other decoder measured, where there is one."""
    decoder = generator["decoder"]
    path = Path(paths[decoder])
    if not aug or not path.is_file():
        return f"No benchmark to set beside this run ({path.name} missing, or the augmentation experiment did not run)."
    bench = read_json(path)
    pairs = {
        arm: (a, bench["arms"][arm])
        for arm, a in aug["arms"].items()
        if "gain" in a and "gain" in bench["arms"].get(arm, {})
    }
    if not pairs:
        return f"The benchmark ({path.name}) measured none of this run's arms."
    generators = max(b["generators"] or 0 for _, b in pairs.values())
    fewest, most = min(b["judge_seeds"] for _, b in pairs.values()), max(b["judge_seeds"] for _, b in pairs.values())
    seeds = f"{fewest}" if fewest == most else f"{fewest}-{most}"
    theirs = bench.get("generator")
    same = (
        "the same settings"
        if theirs == dict(generator)
        else f"other settings: {_generator(theirs)};"
        if theirs
        else "the same decoder, other settings not recorded;"
    )
    plural = "s" if generators != 1 else ""
    said = [
        f"This run (one generator: {_generator(generator)}) beside `benchmarks/results/{path.stem}.md` "
        f"({generators} generator{plural} with {same} × {seeds} judge seeds, judge {bench['judge']}, "
        f"{bench['written'][:10]}), gains over real-small: "
        + "; ".join(f"{arm.replace('_', ' ')} {_gain(a)} here, {_gain(b)} there" for arm, (a, b) in pairs.items())
        + "."
    ]

    def verdict(a: Mapping[str, Any]) -> str:
        return "helps" if a["gain_ci"][0] > 0 else "hurts" if a["gain_ci"][1] < 0 else "no clear effect"

    differ = [
        f"{arm.replace('_', ' ')} ({verdict(a)} here, {verdict(b)} there)"
        for arm, (a, b) in pairs.items()
        if verdict(a) != verdict(b)
    ]
    said.append(
        f"Their verdicts differ for {'; '.join(differ)}: one generator and this judge's budget do not show what "
        "the next training or a converged judge gives."
        if differ
        else "Every arm gets the same verdict (helps, hurts, or no clear effect) in both."
    )
    if bench.get("fraction_of_oracle_gain") is not None:
        said.append(
            f"There the synthetic arm recovers {bench['fraction_of_oracle_gain']:.2f} of the oracle arm's gain."
        )
    lesion = {k: a for k, a in bench["arms"].items() if "lesion_gain" in a}
    if lesion:
        said.append(
            "Its lesion Dice gains (on the test cases with a lesion): "
            + "; ".join(
                f"{k.replace('_', ' ')}{_GLOSS.get(k, '')} {_gain(a, 'lesion_gain')}" for k, a in lesion.items()
            )
            + "."
        )
    for other, other_path in paths.items():
        other_path = Path(other_path)
        if other == decoder or not other_path.is_file():
            continue
        other_bench = read_json(other_path)
        arms = {k: a for k, a in other_bench["arms"].items() if "gain" in a and a["generators"]}
        if arms:
            settings = f": {_generator(other_bench['generator'])}" if other_bench.get("generator") else ""
            said.append(
                f"With the {other} decoder (`benchmarks/results/{other_path.stem}.md`, "
                f"{max(a['generators'] for a in arms.values())} generators{settings}): "
                + "; ".join(f"{k.replace('_', ' ')}{_GLOSS.get(k, '')} {_gain(a)}" for k, a in arms.items())
                + "."
            )
    return " ".join(said)
