"""A trained run to hand out: ``medlsdm pack`` writes it, ``medlsdm run --from-pack`` starts from it.

A pack is a ``.tar.gz`` of what notebooks 04, 05 and 07 read from a run directory, and nothing else::

    README.md                 the model card (Hugging Face format: YAML front matter, then Markdown)
    pack.json                 the content manifest: sha256 and size of every other file, the precisions
    metrics.json              the source run's results of notebooks 01-03
    pipeline/                 the MedLSDMPipeline: model_index.json, configs, safetensors weights
    data/manifest.json        ``data_root`` made relative (``../raw/<name>``, phantoms) or null (own data)
    data/split.json
    data/cases.h5             the preprocessed cases (images stored as float16 where the numbers allow)
    raw/<name>/phantom.json   phantoms only: the recipe the oracle re-renders from

Left out: ``vqgan/`` (04-07 use the VQ-GAN inside the pipeline), ``diffusion/`` (checkpoints, logs),
the raw phantom volumes (the oracle re-renders from ``phantom.json``), samples, figures, executed
notebooks and ``cardiac/`` (notebook 06 trains its own model). ``data/images`` and ``data/labels``
(NIfTI, which 05 reads) are written from ``cases.h5`` when the pack is unpacked, as notebook 01 wrote them.

Weights are stored as float16 where a sample drawn with the float16-rounded weights stays within
``tolerance_db`` PSNR of the float32 sample (same label maps and seed), float32 where not; images
as float16 where rounding moves no voxel by more than :data:`IMAGE_TOLERANCE`. Both load as float32.

Nothing in a pack may run code: :func:`verify_pack` reads the whole archive before anything is
written and refuses (:class:`~medlsdm.errors.PackError` naming the pack and the member) a
changed byte, a missing or unlisted file, a link, a path that is absolute or climbs out
(``..``), or any file but the ones listed above (no code, no pickles); :func:`unpack_run` then
checks the pipeline folder (:func:`~medlsdm.pipelines.loading.check_pipeline_folder`), the case paths
of the data manifest and the HDF5 file (:func:`~medlsdm.data.store.check_plain_store`) and swaps the
run in whole.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import importlib.metadata
import io
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import uuid
import zlib
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .atomic import atomic_path, read_json, write_json, write_text
from .data.io import write_nifti
from .data.prepare import load_manifest
from .data.splits import load_split
from .data.store import FORMAT_VERSION, CaseStore, check_plain_store, stack_cases
from .errors import ConfigError, DataError, PackError
from .metrics.image import psnr
from .model_card import model_card
from .pipelines.loading import check_pipeline_folder, load_pipeline
from .pipelines.pipeline_medlsdm import MedLSDMPipeline
from .pipelines.synthesis import use_scheduler
from .rundir import RunDir
from .training.checkpoint import file_digest

log = logging.getLogger(__name__)

FORMAT, VERSION, MANIFEST = "medlsdm-pack", 1, "pack.json"
#: The files a pack may hold (paths relative to the run directory); anything else is refused.
PACKED = tuple(
    re.compile(p)
    for p in (
        r"README\.md",
        r"metrics\.json",
        r"data/manifest\.json",
        r"data/split\.json",
        r"data/cases\.h5",
        r"raw/[A-Za-z0-9][A-Za-z0-9_.\-]*/phantom\.json",
        r"pipeline/model_index\.json",
        r"pipeline/(unet|vqgan)/config\.json",
        r"pipeline/(unet|vqgan)/diffusion_pytorch_model\.safetensors",
        r"pipeline/scheduler/scheduler_config\.json",
    )
)
#: Files that can run code when loaded (named in the refusal; the list above admits none of them).
CODE_SUFFIXES = (
    ".py",
    ".pyc",
    ".so",
    ".dylib",
    ".dll",
    ".pkl",
    ".pickle",
    ".pt",
    ".pth",
    ".bin",
    ".ckpt",
    ".npy",
    ".npz",
    ".ipynb",
    ".sh",
    ".exe",
)
#: Notebooks that would train over (02, 03) or rewrite (01) what a pack holds.
TRAINING_NOTEBOOKS = {
    "01": "rewrites the data",
    "02": "trains the VQ-GAN again",
    "03": "trains the diffusion model again",
}
#: Notebooks that run from a pack when ``--only`` is not given.
FROM_PACK_DEFAULT = ("04", "05", "07")
#: Largest rounding error of an image voxel (in [-1, 1]) for float16 storage: half a Hounsfield unit in
#: the torso's 2000 HU window (CT stores whole HU); float16 rounds values in [-1, 1] by at most 2.44e-4.
IMAGE_TOLERANCE = 5e-4
_METRICS_KEYS = ("01_preprocessing", "02_vqgan", "03_diffusion")
_CHUNK = 1 << 20


# ----------------------------------------------------------------------------- packing


def _half_rounded(module):
    """A copy of ``module`` whose floating-point weights went through float16 and back."""

    module = copy.deepcopy(module)
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return module


def measure_precision(
    run: RunDir, *, tolerance_db: float = 50.0, steps: int = 50, n_maps: int = 2, seed: int = 0
) -> dict[str, Any]:
    """Which components can be stored as float16: each one's float16-rounded weights against float32.

    Samples the first ``n_maps`` test label maps (DDIM, ``steps`` steps, guidance 1, ``seed``) with
    the float32 pipeline and with one component's weights rounded to float16; a component is stored
    as float16 when the two samples agree within ``tolerance_db`` PSNR (data range 2), then the
    chosen combination is measured too. Images: float16 when rounding moves no voxel more than
    :data:`IMAGE_TOLERANCE`.
    """

    pipe = use_scheduler(load_pipeline(run.root), "ddim")
    ids = load_split(run.split_path)["test"][:n_maps]
    with CaseStore(run.store_path) as store:
        _, labels, _ = stack_cases(store, ids)
        error = max(
            float(np.abs(x.astype(np.float16).astype(np.float32) - x).max()) for x in (store[c][0] for c in store.ids())
        )

    def sample(vqgan, unet):
        p = MedLSDMPipeline(
            vqgan, unet, pipe.scheduler, spacing=pipe.config.spacing, block_shape=pipe.config.block_shape
        )
        p.set_progress_bar_config(disable=True)
        return p(
            labels, num_inference_steps=steps, guidance_scale=1.0, generator=torch.Generator().manual_seed(seed)
        ).images

    reference = sample(pipe.vqgan, pipe.unet)
    half = {"vqgan": _half_rounded(pipe.vqgan), "unet": _half_rounded(pipe.unet)}
    out: dict[str, Any] = {
        "tolerance_db": tolerance_db,
        "check": {"maps": list(ids), "scheduler": "ddim", "steps": steps, "guidance_scale": 1.0, "seed": seed},
    }
    for name in ("vqgan", "unet"):
        models = {"vqgan": pipe.vqgan, "unet": pipe.unet, name: half[name]}
        got = sample(models["vqgan"], models["unet"])
        db = psnr(got, reference, data_range=2.0)
        out[name] = {
            "stored": "float16" if db >= tolerance_db else "float32",
            "psnr_db": round(float(db), 2),
            "max_abs": float(np.abs(got - reference).max()),
        }
    chosen = {n: half[n] if out[n]["stored"] == "float16" else getattr(pipe, n) for n in ("vqgan", "unet")}
    both = sample(chosen["vqgan"], chosen["unet"])
    out["as_stored"] = {
        "psnr_db": round(float(psnr(both, reference, data_range=2.0)), 2),
        "max_abs": float(np.abs(both - reference).max()),
    }
    out["images"] = {
        "stored": "float16" if error <= IMAGE_TOLERANCE else "float32",
        "max_abs_error": error,
        "tolerance": IMAGE_TOLERANCE,
    }
    return out


def _weights(src: Path, dst: Path, stored: str) -> None:

    if stored == "float32":
        shutil.copyfile(src, dst)
        return
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_file(src).items()}
    save_file(tensors, dst, metadata={"format": "pt"})


def _cases_store(src: Path, dst: Path, image_dtype: str) -> None:
    """``src``'s cases in a new HDF5 file of the same layout, images as ``image_dtype``."""

    with CaseStore(src) as store, h5py.File(dst, "w", track_order=True) as out:
        out.attrs["format_version"] = FORMAT_VERSION
        cases = out.create_group("cases", track_order=True)
        for cid in store.ids():
            image, label, affine = store[cid]
            group = cases.create_group(cid)
            group.create_dataset(
                "image", data=image.astype(image_dtype), compression="gzip", compression_opts=9, shuffle=True
            )
            group.create_dataset("label", data=label.astype(np.uint8), compression="gzip", compression_opts=9)
            group.attrs["affine"] = affine


def _build(run: RunDir, folder: Path, precision: dict[str, Any]) -> None:
    """The files of the pack of ``run`` in ``folder`` (all but ``pack.json``)."""

    packed = RunDir(folder)  # the pack's files are a run directory
    for name in ("scheduler", "unet", "vqgan"):
        config = "scheduler_config.json" if name == "scheduler" else "config.json"
        values = {
            k: v for k, v in read_json(run.pipeline / name / config).items() if k != "_name_or_path"
        }  # no local paths
        write_json(packed.pipeline / name / config, values)
        if name != "scheduler":
            _weights(
                run.pipeline / name / "diffusion_pytorch_model.safetensors",
                packed.pipeline / name / "diffusion_pytorch_model.safetensors",
                precision[name]["stored"],
            )
    write_json(
        packed.pipeline / "model_index.json",
        {k: v for k, v in read_json(run.pipeline / "model_index.json").items() if k != "_name_or_path"},
    )
    manifest = load_manifest(run.data)
    root = Path(manifest.data_root) if manifest.data_root else None
    if root is not None and (root / "phantom.json").is_file():
        (packed.raw / root.name).mkdir(parents=True)
        shutil.copyfile(root / "phantom.json", packed.raw / root.name / "phantom.json")
        manifest.data_root = Path(os.path.relpath(packed.raw / root.name, packed.data)).as_posix()  # ../raw/<name>
    else:
        manifest.data_root = None  # own data: its location says nothing to others
        log.warning(
            "%s: the pack holds the preprocessed cases of %s, not a phantom: check the dataset's licence "
            "and data-sharing terms before handing it out",
            run.root,
            manifest.dataset,
        )
    write_json(packed.manifest_path, manifest.to_dict())
    shutil.copyfile(run.split_path, packed.split_path)
    _cases_store(run.store_path, packed.store_path, precision["images"]["stored"])
    metrics = run.read_metrics()
    write_json(packed.metrics_path, {k: metrics[k] for k in _METRICS_KEYS if k in metrics})
    params = {
        name: read_json(p) if (p := trained / "train_params.json").is_file() else {}
        for name, trained in (("vqgan", run.vqgan), ("diffusion", run.diffusion))
    }
    write_text(
        folder / "README.md",
        model_card(
            manifest=manifest,
            metrics=metrics,
            params=params,
            configs={n: read_json(packed.pipeline / n / "config.json") for n in ("unet", "vqgan")},
            precision=precision,
            source=run.root.name,
        ),
    )


def pack_run(
    run_dir: str | os.PathLike, out: str | os.PathLike, *, tolerance_db: float = 50.0, steps: int = 50, seed: int = 0
) -> dict[str, Any]:
    """Pack what notebooks 04, 05 and 07 read from ``run_dir`` into ``out`` (``.tar.gz``, written
    atomically); return the pack's ``pack.json``. Refuses a run without notebooks 01 and 03's outputs."""
    run = RunDir(run_dir).require()
    for path, notebook in (
        (run.manifest_path, "01"),
        (run.split_path, "01"),
        (run.store_path, "01"),
        (run.pipeline / "model_index.json", "03"),
    ):
        if not path.is_file():
            raise DataError(f"{path}: missing; run notebook {notebook} before packing {run.root}")
    if not (tolerance_db > 0 and steps >= 1):
        raise ConfigError(f"tolerance_db must be > 0 and steps >= 1, got {tolerance_db} and {steps}")
    out = Path(out).expanduser().resolve()
    precision = measure_precision(run, tolerance_db=tolerance_db, steps=steps, seed=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".medlsdm-pack-", dir=out.parent) as tmp:
        folder = Path(tmp)
        _build(run, folder, precision)
        names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "medlsdm_version": importlib.metadata.version("medlsdm"),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "source_run": run.root.name,
            "precision": precision,
            "files": {n: {"sha256": file_digest(folder / n), "bytes": (folder / n).stat().st_size} for n in names},
        }
        write_json(folder / MANIFEST, manifest)
        with (
            atomic_path(out) as tmp_out,
            tarfile.open(tmp_out, "w:gz", compresslevel=9, format=tarfile.PAX_FORMAT) as tar,
        ):
            for name in [MANIFEST, "README.md"] + [n for n in names if n != "README.md"]:
                info = tar.gettarinfo(folder / name, arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o644
                with open(folder / name, "rb") as handle:
                    tar.addfile(info, handle)
    log.info(
        "%s: %d files, %.1f MB (weights: vqgan %s, unet %s; images %s)",
        out,
        len(names) + 1,
        out.stat().st_size / 1e6,
        precision["vqgan"]["stored"],
        precision["unet"]["stored"],
        precision["images"]["stored"],
    )
    return manifest


# ----------------------------------------------------------------------------- verifying


def _member_problem(member: tarfile.TarInfo) -> str | None:
    """What is wrong with one member of a pack, or ``None``."""
    name = member.name
    if member.issym() or member.islnk():
        return f"is a link (to {member.linkname!r}); a pack holds regular files only"
    if not (member.isreg() or member.isdir()):
        return "is not a regular file (a device, pipe or other special file)"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or "\\" in name:
        return "is an absolute path"
    parts = name.rstrip("/").split("/") if member.isdir() else name.split("/")
    if ".." in parts:
        return "climbs out of the pack ('..')"
    if any(p in ("", ".") or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*", p) for p in parts):
        return "is not a plain relative path (empty, '.' or unusual characters)"
    if member.isdir():
        return None
    if name.lower().endswith(CODE_SUFFIXES):
        return "is a code file (it could run code when loaded); a pack holds no code"
    if name != MANIFEST and not any(p.fullmatch(name) for p in PACKED):
        return "is not a file a pack holds (README.md, metrics.json, pipeline/, data/, raw/*/phantom.json)"
    return None


def _members(pack: Path, dest: Path | None) -> Iterator[tuple[str, str, int, bytes | None]]:
    """``(name, sha256, bytes, content of pack.json)`` of each file of ``pack``, checked by
    :func:`_member_problem` first; written under ``dest`` when given."""
    try:
        with tarfile.open(pack, "r:gz") as tar:
            seen = set()
            for member in tar:
                problem = _member_problem(member)
                if problem:
                    raise PackError(f"{pack}: member {member.name!r} {problem}")
                if member.isdir():
                    continue
                if member.name in seen:
                    raise PackError(f"{pack}: member {member.name!r} appears twice")
                seen.add(member.name)
                if member.name == MANIFEST and member.size > 16 << 20:
                    raise PackError(f"{pack}: {MANIFEST} is {member.size} bytes, too large for a manifest")
                digest, keep = hashlib.sha256(), io.BytesIO() if member.name == MANIFEST else None
                source = tar.extractfile(member)
                target = None
                if dest is not None:
                    (dest / member.name).parent.mkdir(parents=True, exist_ok=True)
                    target = open(dest / member.name, "xb")
                try:
                    for block in iter(lambda: source.read(_CHUNK), b""):
                        digest.update(block)
                        for sink in (keep, target):
                            if sink is not None:
                                sink.write(block)
                finally:
                    if target is not None:
                        target.close()
                yield member.name, digest.hexdigest(), member.size, keep.getvalue() if keep else None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise PackError(f"{pack}: not a readable .tar.gz pack ({exc})") from None


def verify_pack(pack: str | os.PathLike, *, dest: Path | None = None) -> dict[str, Any]:
    """Read the whole pack and check every file against ``pack.json`` (see the module doc); with
    ``dest``, write its files there while reading. Returns ``pack.json``; raises :class:`PackError`."""
    pack = Path(pack).expanduser().resolve()
    if not pack.is_file():
        raise PackError(f"{pack}: pack file not found")
    found, raw = {}, None
    for name, digest, size, content in _members(pack, dest):
        found[name] = (digest, size)
        raw = content if content is not None else raw
    if raw is None:
        raise PackError(f"{pack}: no {MANIFEST}; not a medlsdm pack")
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PackError(f"{pack}: {MANIFEST} is not valid JSON ({exc})") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not isinstance(manifest.get("files"), dict)
    ):
        raise PackError(f"{pack}: {MANIFEST} is not a medlsdm pack manifest")
    if manifest.get("version") != VERSION:
        raise PackError(
            f"{pack}: pack format version {manifest.get('version')!r}; this medlsdm reads version {VERSION}"
        )
    listed = manifest["files"]
    for name in sorted(set(found) - {MANIFEST} - set(listed)):
        raise PackError(f"{pack}: member {name!r} is not listed in {MANIFEST}")
    for name in sorted(set(listed) - set(found)):
        raise PackError(f"{pack}: {name!r} is listed in {MANIFEST} but missing from the pack")
    for name, entry in sorted(listed.items()):
        if not isinstance(entry, dict) or found[name] != (entry.get("sha256"), entry.get("bytes")):
            raise PackError(f"{pack}: member {name!r} does not match its sha256 in {MANIFEST} (changed or corrupt)")
    return manifest


# ----------------------------------------------------------------------------- unpacking


def _finish(staging: Path, manifest: dict[str, Any]) -> None:
    """Check what the pack holds beyond its hashes and write the NIfTI files of ``data/``."""

    unpacked = RunDir(staging)
    check_pipeline_folder(unpacked.pipeline)
    data = load_manifest(unpacked.data)
    ids = [e.case_id for e in data.cases]
    if not ids or not all(isinstance(c, str) and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*", c) for c in ids):
        raise DataError("data/manifest.json: case ids missing or not plain names")
    if any(e.image != f"images/{e.case_id}.nii.gz" or e.label != f"labels/{e.case_id}.nii.gz" for e in data.cases):
        raise DataError(
            "data/manifest.json: a case's image or label path is not images/<id>.nii.gz, labels/<id>.nii.gz"
        )
    root = data.data_root
    phantoms = [n for n in manifest["files"] if n.startswith("raw/")]
    if root is not None and [f"{root[3:]}/phantom.json"] != phantoms:
        raise DataError(f"data/manifest.json: data_root {root!r} is not the pack's raw/<name> folder")
    check_plain_store(unpacked.store_path, ids)
    with CaseStore(unpacked.store_path) as store:
        for entry in data.cases:
            image, label, affine = store[entry.case_id]
            write_nifti(unpacked.data / entry.image, image, affine, kind="image")
            write_nifti(unpacked.data / entry.label, label, affine, kind="label")


def _unpacked_from(run: RunDir, manifest: dict[str, Any]) -> bool:
    """Whether ``run`` was unpacked from this pack and still holds its files (``metrics.json``,
    which the notebooks update, and the model card aside); raises :class:`PackError` if it
    was unpacked from it and a file changed since."""
    mine = run.root / MANIFEST
    if not mine.is_file() or read_json(mine).get("files") != manifest["files"]:
        return False
    for name, entry in manifest["files"].items():
        if (
            name not in ("metrics.json", "README.md") and file_digest(run.root / name) != entry["sha256"]
        ):  # None: missing
            raise PackError(
                f"{run.root / name}: changed since the run was unpacked from its pack; "
                "unpack the pack into a new --run-dir"
            )
    return True


def unpack_run(pack: str | os.PathLike, run_dir: str | os.PathLike) -> RunDir:
    """Verify ``pack`` and unpack it into ``run_dir`` (absent or empty), atomically: the run
    directory appears whole or not at all. A run directory already unpacked from the same pack is
    used as it is; one holding anything else is refused."""
    pack, run = Path(pack).expanduser().resolve(), RunDir(run_dir)
    manifest = verify_pack(pack)
    if run.root.is_dir() and any(run.root.iterdir()):
        if _unpacked_from(run, manifest):
            log.info("%s: already unpacked from %s", run.root, pack.name)
            return run
        raise PackError(
            f"{run.root}: holds another run (or other files); unpack {pack.name} into a new or empty --run-dir"
        )
    run.root.parent.mkdir(parents=True, exist_ok=True)
    staging = run.root.with_name(f".{run.root.name}.unpack-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        staging.mkdir()
        verify_pack(pack, dest=staging)  # the bytes written are checked again: the file may change between reads
        try:
            _finish(staging, manifest)
        except DataError as exc:
            raise PackError(f"{pack}: {str(exc).replace(str(staging) + os.sep, '')}") from None
        for root, dirs, files in os.walk(staging):
            for name in files:
                with open(os.path.join(root, name), "rb+") as handle:
                    os.fsync(handle.fileno())
        try:
            os.rename(staging, run.root)  # replaces an empty folder; refuses one filled meanwhile
        except OSError as exc:
            raise PackError(
                f"{run.root}: could not take the unpacked run ({exc.strerror}); use a new --run-dir"
            ) from None
        fd = os.open(run.root.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("%s: unpacked from %s (%d files verified)", run.root, pack.name, len(manifest["files"]))
    return run


def check_from_pack(keys: list[str], pack: str | os.PathLike) -> None:
    """Refuse ``--from-pack`` with a notebook that would train over, or rewrite, what the pack holds."""
    bad = [k for k in keys if k in TRAINING_NOTEBOOKS]
    if bad:
        why = "; ".join(f"{k} {TRAINING_NOTEBOOKS[k]}" for k in bad)
        raise ConfigError(
            f"--from-pack {pack} with --only {','.join(bad)}: {why}, over the pack's trained run; "
            f"run 04, 05, 06 or 07 from a pack (default {','.join(FROM_PACK_DEFAULT)})"
        )
