"""What a training checkpoint holds besides the weights, and how it is read safely.

- Random states as tensors and lists (:func:`rng_state`), so that a checkpoint loads with
  ``torch.load(..., weights_only=True)``: :func:`read_checkpoint` never unpickles anything
  else, so a file planted in a checkpoint folder cannot run code.
- A *fingerprint* (:func:`fingerprint`): the training settings that shape the weights (not the
  step count, nor bookkeeping such as the checkpoint interval) and digests of the inputs (data,
  split, upstream model). Resuming compares it with the checkpoint's (:func:`check_fingerprint`:
  ``ConfigError`` naming what changed, or a fresh start), so a rerun with a changed setting never
  continues the old model.
- Digests (sha256) of files, data stores and models: the fingerprint's inputs, and the key of
  caches of what a model made (``medlsdm.evaluation.run``'s synthetic volumes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import random
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: Checkpoints before format 2 pickled the numpy random state and carried no fingerprint.
CHECKPOINT_FORMAT = 2


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) random states and ``generator``'s, as tensors and lists."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(mt), gauss],
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any], generator: torch.Generator) -> None:
    """Restore what :func:`rng_state` saved."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)\.pt$")


def list_checkpoints(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of the checkpoints in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        m = CHECKPOINT_RE.match(path.name)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's contents, loaded with ``weights_only=True`` (tensors and plain types only).

    Raises:
        DataError: unreadable, not of :data:`CHECKPOINT_FORMAT`, or holding other Python objects
            (which only a full unpickling, able to run any code, could restore).
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        reason = f"it names {found.group(1)}" if found else str(exc).strip().splitlines()[0][:200]
        raise DataError(
            f"{path}: refused: it holds Python objects that only a full unpickling would restore, and unpickling "
            f"can run code ({reason}). Checkpoints of medlsdm before checkpoint format {CHECKPOINT_FORMAT} are such "
            f"files: delete {path.parent} or train afresh (resume=False; notebooks 02/03: "
            f"-p \"training_options={{'resume': False}}\")"
        ) from None
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: unreadable checkpoint ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise DataError(
            f"{path}: checkpoint format {found!r}, this version reads format {CHECKPOINT_FORMAT}: "
            "train afresh (resume=False)"
        )
    return state


def _plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def fingerprint(settings: Mapping[str, Any], exclude: Iterable[str] = (), **inputs: str | None) -> dict[str, Any]:
    """``{"settings": ..., "inputs": ...}``: ``settings`` less the ``exclude`` keys, and the
    digests of the inputs (``None``: no such input)."""
    exclude = set(exclude)
    return _plain(
        {
            "settings": {k: v for k, v in settings.items() if k not in exclude},
            "inputs": {k: v for k, v in inputs.items() if v is not None},
        }
    )


def fingerprint_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """``"name: old -> new"`` for each setting or input that differs (inputs by their digest's
    first 12 digits); empty when the fingerprints agree."""
    changes = []
    for part in ("settings", "inputs"):
        a, b = dict((old or {}).get(part, {})), dict(new.get(part, {}))
        for key in sorted(set(a) | set(b)):
            x, y = a.get(key, "(not set)"), b.get(key, "(not set)")
            if json.dumps(x) == json.dumps(y):
                continue
            if part == "inputs":
                changes.append(f"input {key}: {str(x)[:12]} -> {str(y)[:12]}")
            else:
                changes.append(f"{key}: {x!r} -> {y!r}")
    return changes


def check_fingerprint(path: Path, state: Mapping[str, Any], new: Mapping[str, Any], on_change: str) -> list[str]:
    """What differs between the fingerprint of the checkpoint ``path`` (contents ``state``) and
    ``new``; with ``on_change="refuse"`` a difference raises ``ConfigError`` naming it."""
    changes = fingerprint_changes(state.get("fingerprint"), new)
    if changes and on_change == "refuse":
        raise ConfigError(
            f"{path} (step {state['step']}) was trained with other settings or inputs: {'; '.join(changes)}. "
            "Resuming would continue that model under the new settings. Start afresh with resume=False "
            "(or on_change='retrain'; notebooks 02/03: -p on_change=retrain), or keep the old settings."
        )
    if changes:
        log.warning(
            "%s (step %d) was trained with other settings or inputs: %s; on_change='retrain': training afresh",
            path,
            state["step"],
            "; ".join(changes),
        )
    return changes


def file_digest(path: str | os.PathLike) -> str | None:
    """sha256 of a file's bytes (``None`` when there is no such file)."""
    if not Path(path).is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _update(h, value: Any) -> None:
    a = value.detach().cpu() if isinstance(value, torch.Tensor) else np.asarray(value)
    if a.dtype == object:  # e.g. None: its bytes would be an address
        h.update(repr(value).encode())
        return
    h.update(f"{a.dtype}{tuple(a.shape)}".encode())
    if isinstance(a, torch.Tensor):
        a = a.contiguous().reshape(-1).view(torch.uint8).numpy()
    h.update(np.ascontiguousarray(a).tobytes())


def store_digest(store: Mapping, ids: Sequence[str]) -> str:
    """sha256 of a data store: its file when it has one (``store.path``), else the arrays of
    the cases ``ids``."""
    path = getattr(store, "path", None)
    if path is not None and Path(path).is_file():
        return file_digest(path)
    h = hashlib.sha256()
    for case_id in ids:
        h.update(str(case_id).encode())
        for item in store[case_id]:
            _update(h, item)
    return h.hexdigest()


def json_digest(value: Any) -> str:
    """sha256 of a JSON-able value (keys sorted)."""
    return hashlib.sha256(json.dumps(_plain(value), sort_keys=True).encode()).hexdigest()


def module_digest(*modules: Any) -> str:
    """sha256 of models: their config (diffusers ``config``, less private keys such as the folder
    they were loaded from) and every tensor of their ``state_dict``."""
    h = hashlib.sha256()
    for module in modules:
        config = getattr(module, "config", None)
        if config is not None:
            h.update(
                json.dumps(
                    {k: v for k, v in dict(config).items() if not k.startswith("_")}, sort_keys=True, default=str
                ).encode()
            )
        for key, value in module.state_dict().items():
            h.update(key.encode())
            _update(h, value)
    return h.hexdigest()
