"""The ``medlsdm`` command line.

medlsdm run --profile quick --run-dir runs/demo [--only 01,02] [--jobs 2] [-p key=value ...]
medlsdm preprocess --dataset torso-ct --data-root DIR --out-dir RUN/data [...]
medlsdm sweep --only 04 -p guidance_scale=0,1,2,4 [-p steps=10,25] --run-dir RUN [--profile quick]
medlsdm report --run-dir RUN
medlsdm synthesize --pipeline RUN/pipeline --labels FILE_OR_DIR --out-dir DIR [...]
medlsdm evaluate --run-dir RUN [--judge-steps N] [--judge-seeds N] [--inception-weights FILE ...]
medlsdm pack --run-dir RUN --out RUN.tar.gz
medlsdm run --from-pack RUN.tar.gz --run-dir NEW [--only 04,05,07]
"""

from __future__ import annotations

import argparse
import logging
import sys

from .errors import ConfigError, MedLSDMError
from .profiles import notebook_parameters, profile_names
from .rundir import RunDir
from .settings import EvaluationSettings, with_defaults

log = logging.getLogger("medlsdm")


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.replace("x", ",").split(",")]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.replace("x", ",").split(",")]


def _cmd_run(args: argparse.Namespace) -> None:
    from .runner import parse_overrides, run_notebooks

    only = args.only.split(",") if args.only else None
    executed = run_notebooks(
        args.profile,
        args.run_dir,
        only=only,
        overrides=parse_overrides(args.param),
        notebooks_dir=args.notebooks,
        kernel_name=args.kernel,
        jobs=args.jobs,
        from_pack=args.from_pack,
    )
    log.info("executed notebooks: %s", ", ".join(str(p) for p in executed))


def _cmd_pack(args: argparse.Namespace) -> None:
    from .pack import pack_run

    pack_run(args.run_dir, args.out, tolerance_db=args.tolerance_db, steps=args.check_steps)  # logs what it wrote


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


#: ``medlsdm preprocess`` options passed to the dataset adapter when given: (flag, type, help).
ADAPTER_FLAGS = {
    "modality": ("--modality", str, "CT or MR (nifti; nnunet: overrides dataset.json)"),
    "num_classes": ("--num-classes", int, "classes incl. background, values 0..K-1 (nifti)"),
    "classes_file": ("--classes-file", str, "class table file: nnU-Net dataset.json labels or '<value> <name>' lines"),
    "labels": ("--labels", str, "which labels: autopet anatomy|lesion, synthrad2023 anatomy|body"),
    "labels_dir": ("--labels-dir", str, "folder of anatomical label maps <case_id>.nii.gz (autopet, synthrad2023)"),
    "merge_lesion": ("--merge-lesion", None, "autopet: add the lesion mask SEG as one more class"),
    "image": ("--image", str, "autopet CTres|CT; synthrad2023 mr|ct|cbct"),
    "tasks": ("--tasks", _names, "synthrad2023 task folders, e.g. Task1"),
    "regions": ("--regions", _names, "synthrad2023 regions, e.g. brain,pelvis"),
    "subsets": ("--subsets", _names, "mnms sub-folders holding subject folders"),
    "views": ("--views", _names, "mnms (M&Ms-2) views: SA, LA or SA,LA"),
    "class_table": ("--class-table", str, "duke_breast: paper (breast, vessel) or full (+ fibroglandular)"),
    "channel": ("--channel", int, "nnunet image channel (0 = _0000)"),
    "window": ("--window", _floats, "CT window low,high in HU"),
    "percentiles": ("--percentiles", _floats, "MR clipping percentiles low,high"),
}


def adapter_options(args: argparse.Namespace) -> dict:
    """The adapter options given on the command line (flags left out are not passed)."""
    return {key: getattr(args, key) for key in ADAPTER_FLAGS if getattr(args, key) not in (None, False)}


def _cmd_preprocess(args: argparse.Namespace) -> None:
    from .data.phantom import make_phantom
    from .data.phantom.common import PHANTOM_KINDS
    from .data.prepare import prepare_dataset

    defaults = notebook_parameters(args.profile, "01")
    data_root = args.data_root
    if args.dataset in PHANTOM_KINDS:
        if data_root is None:
            data_root = f"{args.out_dir}/../raw"
        make_phantom(args.dataset, data_root, args.n_cases or defaults["n_cases"], seed=args.seed)
    elif data_root is None:
        raise ConfigError(f"option --data-root is required for dataset {args.dataset!r}")
    options = {**defaults.get("dataset_options", {}), **adapter_options(args)}
    manifest = prepare_dataset(
        args.dataset,
        data_root,
        args.out_dir,
        spacing=args.spacing or defaults["spacing"],
        block_shape=args.block_shape or defaults["block_shape"],
        n_cases=args.n_cases,
        seed=args.seed,
        preprocessing=args.preprocessing or defaults.get("preprocessing", "resample"),
        blocks_per_case=args.blocks_per_case or defaults.get("blocks_per_case", 1),
        **options,
    )
    log.info("preprocessed %d cases into %s", len(manifest.cases), args.out_dir)


def _cmd_sweep(args: argparse.Namespace) -> None:
    from .sweep import parse_sweep, sweep

    result = sweep(
        args.only,
        parse_sweep(args.param),
        args.run_dir,
        profile=args.profile,
        notebooks_dir=args.notebooks,
        kernel_name=args.kernel,
    )
    log.info("%d combinations; table %s, plot %s", len(result.rows), result.table, result.plot)


def _cmd_report(args: argparse.Namespace) -> None:
    from .html_report import build_report

    build_report(args.run_dir, args.out_dir)


def nnunet_writer(args: argparse.Namespace, num_classes: int):
    """The :class:`~medlsdm.data.nnunet.NNUNetWriter` of ``synthesize --format nnunet``.

    Class names and the channel name come from ``--manifest`` (default: the ``data/manifest.json``
    beside the pipeline folder, when there is one); ``--channel-name`` overrides the channel.
    """
    from pathlib import Path

    from .atomic import read_json
    from .data.classes import ClassTable
    from .data.nnunet import NNUNetWriter

    manifest_path = Path(args.manifest) if args.manifest else RunDir(Path(args.pipeline).parent).manifest_path
    manifest = read_json(manifest_path) if (args.manifest or manifest_path.is_file()) else {}
    names = manifest.get("classes") or ["background"] + [f"class_{i}" for i in range(1, num_classes)]
    if len(names) != num_classes:
        raise ConfigError(f"{manifest_path}: {len(names)} classes, but the pipeline has {num_classes}")
    channel = args.channel_name or {"CT": "CT", "MR": "MRI"}.get(manifest.get("modality"))
    if channel is None:
        raise ConfigError(
            "--format nnunet needs option --channel-name (CT or an MR name) or a --manifest with the modality"
        )
    return NNUNetWriter(
        args.out_dir,
        classes=ClassTable(tuple(names), tuple(range(num_classes))),
        channel_name=channel,
        prefix=args.prefix,
    )


def _cmd_synthesize(args: argparse.Namespace) -> None:
    from .pipelines.loading import load_pipeline_dir
    from .pipelines.synthesis import (
        block_window,
        check_output_names,
        check_sampling,
        label_files,
        synthesize_files,
        use_scheduler,
    )

    check_sampling(args.steps, args.guidance)  # before the pipeline loads
    if args.format == "nifti":
        check_output_names(label_files(args.labels))
    pipe = use_scheduler(load_pipeline_dir(args.pipeline), args.scheduler)
    pipe.set_progress_bar_config(disable=True)
    writer = nnunet_writer(args, pipe.unet.config.num_classes) if args.format == "nnunet" else None
    window = None if args.one_pass else args.window or block_window(pipe)
    written = synthesize_files(
        pipe,
        args.labels,
        args.out_dir,
        steps=args.steps,
        guidance_scale=args.guidance,
        seed=args.seed,
        num_per_label=args.num_per_label,
        batch_size=args.batch_size,
        nnunet=writer,
        window=window,
        overlap=args.overlap,
    )
    log.info("%d volumes written to %s", len(written), args.out_dir)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluation.run import evaluate_run
    from .evaluation.summary import results_tables
    from .pipelines.synthesis import check_sampling

    defaults = notebook_parameters(args.profile, "05")
    options = {
        key: getattr(args, key) for key in ("scheduler", "steps", "guidance_scale", "seed", "n_test", "judge_seeds")
    }
    options = {
        **defaults,
        **{key: value for key, value in options.items() if value is not None},
    }  # all of the profile's 05 settings
    given = with_defaults("medlsdm evaluate", EvaluationSettings, options)  # an unknown key fails here, before any work
    check_sampling(given["steps"], given["guidance_scale"])  # before the pipeline loads or anything is written
    for key, value in (
        ("n_test", options.get("n_test")),
        ("judge_seeds", options.get("judge_seeds")),
        ("judge_steps", args.judge_steps),
    ):
        if value is not None and value < 1:
            raise ConfigError(f"{key} (--{key.replace('_', '-')}) must be >= 1, got {value}")
    if args.judge_steps is not None:
        options["judge_options"] = {**(options.get("judge_options") or {}), "max_steps": args.judge_steps}
    weights = {
        "inception": args.inception_weights,
        "medicalnet": args.medicalnet_weights,
        "vgg16": args.vgg16_weights,
        "lpips": args.lpips_weights,
    }
    with RunDir(args.run_dir).require().writing("medlsdm evaluate"):
        result = evaluate_run(args.run_dir, augment=not args.no_augment, weights=weights, **options)
    for name, table in results_tables(result).items():
        print(f"\n{name}\n\n{table}")
    log.info("\n05_evaluation written to %s/metrics.json (%.0f s)", args.run_dir, result["seconds"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medlsdm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute the notebooks in order with papermill")
    run.add_argument("--profile", choices=profile_names(), default="quick")
    run.add_argument("--run-dir", required=True, help="the run directory (created if missing)")
    run.add_argument("--only", help="comma-separated notebook numbers, e.g. 01,02")
    run.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a notebook parameter (Python literal or string); repeatable",
    )
    run.add_argument("--notebooks", help="folder of the notebooks (default: the repository's notebooks/)")
    run.add_argument("--kernel", help="Jupyter kernel name (default: the notebook's)")
    run.add_argument(
        "--jobs",
        type=int,
        choices=(1, 2),
        default=1,
        help="2: independent notebooks side by side, each with half the CPU threads "
        "(medlsdm.runner.PLAN; faster on small CPUs); default 1, one at a time",
    )
    run.add_argument(
        "--from-pack",
        metavar="PACK",
        help="start from a pack (medlsdm pack): verified, unpacked into "
        "--run-dir (new or empty); --only defaults to 04,05,07",
    )
    run.set_defaults(func=_cmd_run)

    pck = sub.add_parser("pack", help="pack a trained run (pipeline, data, model card) for notebooks 04-07 elsewhere")
    pck.add_argument("--run-dir", required=True, help="a run directory after notebooks 01-03")
    pck.add_argument("--out", required=True, help="the pack to write, e.g. demo.tar.gz")
    pck.add_argument(
        "--tolerance-db",
        type=float,
        default=50.0,
        help="float16 weights where a sample stays within this PSNR of the float32 one (default 50)",
    )
    pck.add_argument("--check-steps", type=int, default=50, help="DDIM steps of that check (default 50)")
    pck.set_defaults(func=_cmd_pack)

    pre = sub.add_parser(
        "preprocess", help="preprocess a dataset into a run's data/ folder (notebook 01 without the notebook)"
    )
    pre.add_argument(
        "--dataset",
        default="torso-ct",
        help="torso-ct, breast-mr, cardiac-2d, nifti, nnunet, autopet, synthrad2023, duke_breast, mnms",
    )
    pre.add_argument("--data-root", help="dataset folder (phantoms: where to write them; default OUT_DIR/../raw)")
    pre.add_argument("--out-dir", required=True)
    pre.add_argument(
        "--profile", choices=profile_names(), default="quick", help="defaults for spacing, block shape, cases"
    )
    pre.add_argument("--spacing", type=_floats, help="target spacing D,H,W in mm, e.g. 6,5.5,5.5")
    pre.add_argument("--block-shape", type=_ints, help="block shape D,H,W, e.g. 32,64,64")
    pre.add_argument("--n-cases", type=int)
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument(
        "--preprocessing",
        choices=["resample", "paper"],
        help="resample: target spacing, window/percentiles, centred blocks; paper: native spacing, "
        "random depth blocks (about depth/4), min-max per block",
    )
    pre.add_argument("--blocks-per-case", type=int, help="depth blocks per case (resample)")
    for key, (flag, kind, text) in ADAPTER_FLAGS.items():
        if kind is None:
            pre.add_argument(flag, dest=key, action="store_true", help=text)
        else:
            pre.add_argument(flag, dest=key, type=kind, help=text)
    pre.set_defaults(func=_cmd_preprocess)

    swp = sub.add_parser("sweep", help="rerun one notebook for every combination of parameter values")
    swp.add_argument("--only", required=True, help="the notebook number to rerun, e.g. 04")
    swp.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="values of one parameter (Python literals; commas split at top level); repeatable",
    )
    swp.add_argument("--run-dir", required=True, help="a run directory holding the earlier notebooks' outputs")
    swp.add_argument("--profile", choices=profile_names(), default="quick")
    swp.add_argument("--notebooks", help="folder of the notebooks (default: the repository's notebooks/)")
    swp.add_argument("--kernel", help="Jupyter kernel name (default: the notebook's)")
    swp.set_defaults(func=_cmd_sweep)

    rep = sub.add_parser("report", help="export the executed notebooks to an offline static HTML report")
    rep.add_argument("--run-dir", required=True)
    rep.add_argument("--out-dir", help="where to write (default RUN/report)")
    rep.set_defaults(func=_cmd_report)

    from .pipelines.synthesis import SCHEDULERS

    syn = sub.add_parser("synthesize", help="synthesise volumes from label-map NIfTI files with a trained pipeline")
    syn.add_argument("--pipeline", required=True, help="a saved MedLSDMPipeline folder, e.g. RUN/pipeline")
    syn.add_argument("--labels", required=True, help="a label-map NIfTI file or a folder of them")
    syn.add_argument("--out-dir", required=True)
    syn.add_argument("--scheduler", choices=list(SCHEDULERS), default="ddim")
    syn.add_argument("--steps", type=int, default=50)
    syn.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (1: conditional only)")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--num-per-label", type=int, default=1)
    syn.add_argument("--batch-size", type=int, default=4, help="label maps sampled together (same shape)")
    syn.add_argument(
        "--format",
        choices=["nifti", "nnunet"],
        default="nifti",
        help="nifti: <label>_syn<k>.nii.gz; nnunet: an nnU-Net raw dataset (imagesTr, labelsTr, dataset.json)",
    )
    syn.add_argument(
        "--manifest", help="nnunet: manifest.json giving class names and modality (default: PIPELINE/../data/)"
    )
    syn.add_argument("--channel-name", help="nnunet: the image channel's name (default from the manifest: CT or MRI)")
    syn.add_argument("--prefix", default="medlsdm", help="nnunet: case identifiers <prefix>_000, <prefix>_001 …")
    syn.add_argument(
        "--window",
        type=int,
        help="label slices per depth window for deeper label maps "
        "(default: the depth of the pipeline's training block)",
    )
    syn.add_argument("--overlap", type=int, help="label slices shared by neighbouring windows (default: a quarter)")
    syn.add_argument("--one-pass", action="store_true", help="denoise every label map whole, without windows")
    syn.set_defaults(func=_cmd_synthesize)

    ev = sub.add_parser(
        "evaluate",
        help="notebook 05 without the notebook: image metrics, segmentation experiment, "
        "privacy check; tables on stdout, results in RUN/metrics.json",
    )
    ev.add_argument("--run-dir", required=True, help="a run directory after notebooks 01-03")
    ev.add_argument("--profile", choices=profile_names(), default="quick", help="defaults of the options below")
    ev.add_argument("--scheduler", choices=list(SCHEDULERS))
    ev.add_argument("--steps", type=int, help="sampling steps")
    ev.add_argument("--guidance", dest="guidance_scale", type=float, help="classifier-free guidance scale")
    ev.add_argument("--seed", type=int)
    ev.add_argument("--n-test", type=int, help="test label maps to use (default: all)")
    ev.add_argument(
        "--judge-steps", type=int, help="most training steps of each judge network (early stopping may end it sooner)"
    )
    ev.add_argument("--judge-seeds", type=int, help="judge networks per arm (seeds seed, seed + 1, ...)")
    ev.add_argument("--no-augment", action="store_true", help="skip the real + synthetic training experiment")
    ev.add_argument("--inception-weights", help="pytorch-fid InceptionV3 weights file (enables FID)")
    ev.add_argument("--medicalnet-weights", help="MedicalNet resnet_10_23dataset.pth (enables 3D-FID)")
    ev.add_argument("--vgg16-weights", help="torchvision VGG16 state_dict (with --lpips-weights: LPIPS)")
    ev.add_argument("--lpips-weights", help="LPIPS v0.1 vgg.pth linear heads")
    ev.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        args.func(args)
    except MedLSDMError as exc:
        log.error("error: %s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted (Ctrl-C); files written so far are complete, a rerun redoes the rest")
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
