"""Training on Hugging Face ``accelerate``: a small generic loop and the VQ-GAN training.

:class:`Trainer` runs any model(s) for a number of optimiser steps, given a *step
function* that computes the losses of one micro-batch and calls :meth:`Trainer.backward`
and :meth:`Trainer.optimizer_step`. It takes care of what every training needs: mixed
precision (``no|bf16|fp16``), gradient accumulation and clipping, seeded random crops
sharded over the processes, a ``tqdm`` progress bar, an append-only CSV loss log,
validation, atomic checkpoints (models with their buffers, optimisers, RNG states, step)
and resuming from the last checkpoint. The same code runs on one CPU, a GPU, or several
processes started with ``accelerate launch``; the latent diffusion training reuses it with
its own step function.

Several processes: ``accelerate launch --multi_gpu --num_processes N script.py`` (or
``torchrun --nproc_per_node N script.py``); on a machine without a GPU the processes use the
gloo backend on the CPU (``accelerate launch --cpu`` alone starts a single process unless
MPI is set up).

:func:`train_vqgan` is what notebook 02 calls: it trains the VQ-GAN on random crops of the
run's case store (``RUN/data/cases.h5`` + ``split.json``) and saves it to ``RUN/vqgan/model``.
"""
from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import random
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .atomic import atomic_path, write_json
from .errors import ConfigError, DataError

log = logging.getLogger(__name__)

MIXED_PRECISION = ("no", "bf16", "fp16")
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)\.pt$")


# --------------------------------------------------------------------------------------
# loss log
# --------------------------------------------------------------------------------------
class CSVLog:
    """An append-only CSV log whose first column is ``step``.

    Rows are appended with one ``write`` of a complete line, so a crash leaves at most the
    rows logged so far; whenever the header must change (a new column, or rows dropped on
    resume) the whole file is rewritten atomically.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def read(self) -> list[dict[str, str]]:
        """All rows (values as strings; empty string for a missing value)."""
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def _fields(self) -> list[str] | None:
        if not self.path.is_file():
            return None
        with open(self.path, newline="") as f:
            header = f.readline()
        return next(csv.reader([header])) if header.strip() else None

    @staticmethod
    def _render(fields: Sequence[str], rows: Sequence[Mapping[str, Any]], header: bool) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="raise", lineterminator="\n")
        if header:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k, "")) for k in fields})
        return buf.getvalue()

    def _rewrite(self, fields: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
        with atomic_path(self.path) as tmp:
            tmp.write_text(self._render(fields, rows, header=True))

    def append(self, row: Mapping[str, Any]) -> None:
        """Append one row (dict); new keys add columns (the file is rewritten once)."""
        fields = self._fields()
        if fields is None:
            self._rewrite(list(row), [row])
            return
        new = [k for k in row if k not in fields]
        if new:
            self._rewrite(fields + new, self.read() + [dict(row)])
            return
        with open(self.path, "a", newline="") as f:
            f.write(self._render(fields, [row], header=False))
            f.flush()
            os.fsync(f.fileno())

    def truncate_after(self, step: int) -> None:
        """Drop rows with ``step`` greater than ``step`` (used when resuming)."""
        fields = self._fields()
        if fields is None:
            return
        rows = self.read()
        kept = [r for r in rows if r.get("step", "") == "" or int(float(r["step"])) <= step]
        if len(kept) != len(rows):
            self._rewrite(fields, kept)


def _fmt(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


# --------------------------------------------------------------------------------------
# data: seeded random crops
# --------------------------------------------------------------------------------------
class ArrayStore(dict):
    """A case store in memory: ``{case_id: (image (1, D, H, W), label (D, H, W), affine)}``.

    Same reading interface as :class:`medlsdm.data.store.CaseStore` (``store[case_id]``).
    """


class RandomCropDataset(torch.utils.data.Dataset):
    """Random crops of a case store; item ``i`` is a pure function of ``(seed, i)``.

    Because a crop depends only on its index, a run is reproducible and resumable without
    saving any data-loader state: :class:`Trainer` asks for indices derived from the step.

    Args:
        store: mapping ``case_id -> (image (1, D, H, W) float32, label (D, H, W) int64, affine)``
            (:class:`medlsdm.data.store.CaseStore` or :class:`ArrayStore`).
        case_ids: the cases to crop from (the training split).
        crop_shape: crop size ``(D, H, W)`` (or ``(H, W)`` for 2-D cases ``(1, H, W)``);
            ``None`` uses whole cases (they must all have the same shape).
        seed: seed of the crop positions.
        cache: keep every case in memory after its first read (fast; the cases must fit).
    """

    LENGTH = 2**62

    def __init__(self, store: Mapping, case_ids: Sequence[str], crop_shape: Sequence[int] | None,
                 seed: int = 0, cache: bool = True):
        self.store = store
        self.case_ids = list(case_ids)
        if not self.case_ids:
            raise DataError(f"{_store_name(store)}: no training cases to crop from")
        self.crop_shape = None if crop_shape is None else tuple(int(s) for s in crop_shape)
        self.seed = int(seed)
        self.cache = cache
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        image, _ = self._case(self.case_ids[0])
        if self.crop_shape is not None and len(self.crop_shape) != image.ndim - 1:
            raise ConfigError(f"crop_shape {self.crop_shape} does not match cases of shape {image.shape[1:]}")

    def __len__(self) -> int:
        return self.LENGTH

    def _case(self, case_id: str) -> tuple[np.ndarray, np.ndarray]:
        if case_id in self._cache:
            return self._cache[case_id]
        try:
            image, label, _ = self.store[case_id]
        except KeyError:
            raise DataError(f"{_store_name(self.store)}: case {case_id!r} not found") from None
        image, label = np.asarray(image, dtype=np.float32), np.asarray(label, dtype=np.int64)
        if self.crop_shape is not None and any(c > s for c, s in zip(self.crop_shape, image.shape[1:])):
            raise DataError(
                f"{_store_name(self.store)}: case {case_id!r} of shape {image.shape[1:]} is smaller "
                f"than crop_shape {self.crop_shape}"
            )
        if self.cache:
            self._cache[case_id] = (image, label)
        return image, label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(index)])
        case_id = self.case_ids[int(rng.integers(len(self.case_ids)))]
        image, label = self._case(case_id)
        if self.crop_shape is None:
            return torch.from_numpy(image.copy()), torch.from_numpy(label.copy())
        starts = [int(rng.integers(0, s - c + 1)) for s, c in zip(image.shape[1:], self.crop_shape)]
        window = tuple(slice(a, a + c) for a, c in zip(starts, self.crop_shape))
        return (torch.from_numpy(np.ascontiguousarray(image[(slice(None), *window)])),
                torch.from_numpy(np.ascontiguousarray(label[window])))


def _store_name(store: Any) -> str:
    return str(getattr(store, "path", type(store).__name__))


class _StepBatches(torch.utils.data.Sampler):
    """Batch indices for optimiser steps ``start …``: disjoint per process and micro-batch."""

    def __init__(self, start_step, batch_size, accumulation, rank, world):
        self.start_step, self.batch_size = start_step, batch_size
        self.accumulation, self.rank, self.world = accumulation, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        micro = self.start_step * self.accumulation
        while True:
            first = (micro * self.world + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))
            micro += 1


# --------------------------------------------------------------------------------------
# the generic loop
# --------------------------------------------------------------------------------------
def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


class Trainer:
    """A training loop on ``accelerate``, driven by a step function.

    The step function ``step_fn(trainer, batch) -> dict[str, float]`` is called once per
    micro-batch (inside ``accelerator.accumulate`` and ``accelerator.autocast``) with the
    batch already on the device; it computes its losses, calls :meth:`backward` and
    :meth:`optimizer_step` for each of its optimisers, and returns numbers to log.
    ``trainer.step`` is the number of optimiser steps done before this one; use
    ``trainer.generator`` for any random choice (it is checkpointed).

    Args:
        models: named models; they are prepared by ``accelerate`` (``trainer.models[name]``
            is the wrapped one, :meth:`unwrap` gives the plain one) and checkpointed with
            their buffers.
        optimizers: named optimisers over the models' parameters.
        step_fn: the step function.
        dataset: map-style dataset; item ``i`` must depend only on ``i`` (e.g.
            :class:`RandomCropDataset`). Batches use indices derived from the step, so
            processes read disjoint items and resuming needs no loader state.
        out_dir: where ``checkpoints/`` and ``log.csv`` go.
        max_steps: optimiser steps to reach.
        batch_size: samples per micro-batch per process.
        gradient_accumulation_steps: micro-batches per optimiser step.
        max_grad_norm: clip each optimiser's gradients to this norm (``None``: no clipping).
        mixed_precision: ``"no"``, ``"bf16"`` or ``"fp16"`` (fp16 needs a GPU).
        checkpoint_every: write a checkpoint every this many steps (and always at the end).
        keep_checkpoints: how many recent checkpoints to keep.
        log_every: log (CSV + progress bar) every this many steps.
        val_fn: ``val_fn(trainer) -> dict`` run on the main process every ``val_every``
            steps and at the end; its numbers go into the log with a ``val_`` prefix.
        val_every: validation interval in steps (``None``: only at the end).
        seed: seed of models' random choices and of ``trainer.generator`` (offset by the
            process index).
        resume: continue from the last checkpoint in ``out_dir/checkpoints`` if there is
            one; with ``False`` old checkpoints and log are removed.
        num_workers: data-loader worker processes.
        schedulers: learning-rate schedulers by optimiser name, stepped once per optimiser
            step (not prepared by accelerate, so the schedule does not depend on the number
            of processes) and checkpointed.
        extra_state: named objects with ``state_dict``/``load_state_dict`` to checkpoint too
            (e.g. an EMA of the weights).
        progress: show a progress bar (main process only).
        accelerator_kwargs: more arguments for ``accelerate.Accelerator``.
    """

    def __init__(
        self,
        *,
        models: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer],
        step_fn: Callable[["Trainer", Any], Mapping[str, float]],
        dataset: torch.utils.data.Dataset,
        out_dir: str | os.PathLike,
        max_steps: int,
        batch_size: int = 1,
        gradient_accumulation_steps: int = 1,
        max_grad_norm: float | None = 1.0,
        mixed_precision: str = "no",
        checkpoint_every: int | None = None,
        keep_checkpoints: int = 2,
        log_every: int = 10,
        val_fn: Callable[["Trainer"], Mapping[str, float]] | None = None,
        val_every: int | None = None,
        seed: int = 0,
        resume: bool = True,
        num_workers: int = 0,
        schedulers: Mapping[str, Any] | None = None,
        extra_state: Mapping[str, Any] | None = None,
        progress: bool = True,
        accelerator_kwargs: Mapping[str, Any] | None = None,
    ):
        from accelerate import Accelerator

        if mixed_precision not in MIXED_PRECISION:
            raise ConfigError(f"mixed_precision must be one of {MIXED_PRECISION}, got {mixed_precision!r}")
        for name, value in (("max_steps", max_steps), ("batch_size", batch_size),
                            ("gradient_accumulation_steps", gradient_accumulation_steps),
                            ("log_every", log_every), ("keep_checkpoints", keep_checkpoints)):
            if int(value) < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if mixed_precision == "fp16" and not torch.cuda.is_available():
            raise ConfigError("mixed_precision='fp16' needs a CUDA GPU; use 'bf16' or 'no' on CPU")
        kwargs = dict(accelerator_kwargs or {})
        launched = int(os.environ.get("LOCAL_RANK", -1)) != -1 or int(os.environ.get("WORLD_SIZE", 1)) > 1
        if launched and not torch.cuda.is_available():
            # several processes without a GPU: accelerate needs cpu=True to use gloo (MULTI_CPU)
            kwargs.setdefault("cpu", True)
        # accelerate keeps its state in process-wide singletons; a notebook may train several
        # times with other settings, so start from a clean state (the process group, if any,
        # is kept)
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
        self.accelerator = Accelerator(
            mixed_precision=mixed_precision,
            gradient_accumulation_steps=int(gradient_accumulation_steps),
            **kwargs,
        )
        acc = self.accelerator
        self.out_dir = Path(out_dir)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        self.log = CSVLog(self.out_dir / "log.csv")
        self.step_fn = step_fn
        self.dataset = dataset
        self.max_steps = int(max_steps)
        self.batch_size = int(batch_size)
        self.accumulation = int(gradient_accumulation_steps)
        self.max_grad_norm = max_grad_norm
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = int(keep_checkpoints)
        self.log_every = int(log_every)
        self.val_fn = val_fn
        self.val_every = val_every
        self.seed = int(seed)
        self.resume = resume
        self.num_workers = int(num_workers)
        self.schedulers = dict(schedulers or {})
        unknown = sorted(set(self.schedulers) - set(optimizers))
        if unknown:
            raise ConfigError(f"schedulers {unknown} have no optimiser of the same name")
        self.extra_state = dict(extra_state or {})
        self.extra_state.update({f"scheduler.{n}": sch for n, sch in self.schedulers.items()})
        self.progress = progress
        self.step = 0
        self.seconds = 0.0
        self.last_logs: dict[str, float] = {}
        self.last_val: dict[str, float] = {}
        self.generator = torch.Generator().manual_seed(self.seed * 1000 + acc.process_index)

        names = list(models)
        prepared = acc.prepare(*[models[n] for n in names], *[optimizers[n] for n in optimizers])
        if len(names) + len(optimizers) == 1:
            prepared = (prepared,)
        self.models = dict(zip(names, prepared[: len(names)]))
        self.optimizers = dict(zip(optimizers, prepared[len(names):]))
        self._opt_params = {
            n: [p for g in opt.param_groups for p in g["params"]] for n, opt in self.optimizers.items()
        }

    # -- helpers for step functions ------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    def unwrap(self, name: str) -> nn.Module:
        """The plain (not DDP-wrapped) model ``name``."""
        return self.accelerator.unwrap_model(self.models[name])

    def backward(self, loss: torch.Tensor) -> None:
        """``accelerator.backward`` (scales for accumulation and fp16)."""
        self.accelerator.backward(loss)

    def optimizer_step(self, name: str) -> float | None:
        """Clip (on the last micro-batch), step and zero the gradients of optimiser ``name``.

        Returns the gradient norm before clipping when it was computed.
        """
        opt = self.optimizers[name]
        norm = None
        if self.accelerator.sync_gradients and self.max_grad_norm is not None:
            self.accelerator.unscale_gradients(optimizer=opt)
            norm = float(torch.nn.utils.clip_grad_norm_(self._opt_params[name], self.max_grad_norm))
        opt.step()
        opt.zero_grad(set_to_none=True)
        if self.accelerator.sync_gradients and name in self.schedulers:
            self.schedulers[name].step()
        return norm

    # -- checkpoints ---------------------------------------------------------------------
    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/checkpoint-<step>.pt`` atomically (main process) and prune old ones."""
        from accelerate.utils import gather_object

        acc = self.accelerator
        rng = gather_object([_rng_state(self.generator)])  # every process' RNG, in rank order
        path = self.checkpoint_dir / f"checkpoint-{self.step:07d}.pt"
        if acc.is_main_process:
            state = {
                "format": 1,
                "step": self.step,
                "seconds": self.seconds,
                "num_processes": acc.num_processes,
                "written_by_process": acc.process_index,
                "models": {n: self.unwrap(n).state_dict() for n in self.models},
                "optimizers": {n: opt.state_dict() for n, opt in self.optimizers.items()},
                "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
                "extra": {n: obj.state_dict() for n, obj in self.extra_state.items()},
                "rng": rng,
            }
            with atomic_path(path) as tmp:
                torch.save(state, tmp)
            for _, old in list_checkpoints(self.checkpoint_dir)[: -self.keep_checkpoints]:
                old.unlink(missing_ok=True)
            log.info("checkpoint written: %s", path)
        acc.wait_for_everyone()
        return path if acc.is_main_process else None

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore models, optimisers, extra state, RNG states and step from ``path``."""
        acc = self.accelerator
        path = Path(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{path}: unreadable checkpoint ({exc})") from None
        try:
            for n in self.models:
                self.unwrap(n).load_state_dict(state["models"][n])
            for n, opt in self.optimizers.items():
                opt.load_state_dict(state["optimizers"][n])
            for n, obj in self.extra_state.items():
                obj.load_state_dict(state["extra"][n])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise ConfigError(
                f"{path}: the checkpoint does not fit the current models/optimisers ({exc}); "
                "train with the parameters it was made with, or pass resume=False"
            ) from None
        if state.get("scaler") is not None and acc.scaler is not None:
            acc.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.seconds = float(state.get("seconds", 0.0))
        if state.get("num_processes") == acc.num_processes:
            _set_rng_state(state["rng"][acc.process_index], self.generator)
        else:
            log.warning("%s was written by %s process(es), now %d: random states are reseeded",
                        path, state.get("num_processes"), acc.num_processes)
            self._seed(offset=self.step)

    def _seed(self, offset: int = 0) -> None:
        from accelerate.utils import set_seed

        set_seed(self.seed + offset, device_specific=True)
        self.generator.manual_seed((self.seed + offset) * 1000 + self.accelerator.process_index)

    def _start(self) -> None:
        acc = self.accelerator
        found = list_checkpoints(self.checkpoint_dir)
        if self.resume and found:
            step, path = found[-1]
            self.load_checkpoint(path)
            log.info("resumed from %s (step %d of %d)", path, self.step, self.max_steps)
            if self.step >= self.max_steps:
                log.warning("%s is at step %d >= max_steps=%d: nothing to train (resume=False starts afresh)",
                            path, self.step, self.max_steps)
            if acc.is_main_process:
                self.log.truncate_after(self.step)
        else:
            if acc.is_main_process and (found or self.log.path.exists()):
                log.info("starting afresh: removing %d old checkpoint(s) and the log in %s", len(found), self.out_dir)
                for _, path in found:
                    path.unlink(missing_ok=True)
                self.log.path.unlink(missing_ok=True)
            self._seed()
        acc.wait_for_everyone()

    # -- the loop ------------------------------------------------------------------------
    def _loader(self):
        sampler = _StepBatches(self.step, self.batch_size, self.accumulation,
                               self.accelerator.process_index, self.accelerator.num_processes)
        # its own generator: creating the iterator must not consume the global torch RNG,
        # or a resumed run would draw different random numbers than an uninterrupted one
        return torch.utils.data.DataLoader(
            self.dataset, batch_sampler=sampler, num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.seed + self.step),
        )

    def _validate(self) -> dict[str, float]:
        if self.val_fn is None:
            return {}
        values: dict[str, float] = {}
        if self.is_main_process:
            values = {f"val_{k}": float(v) for k, v in self.val_fn(self).items()}
            self.last_val = values
        self.accelerator.wait_for_everyone()
        return values

    def _reduce(self, sums: dict[str, float], counts: dict[str, int]) -> dict[str, float]:
        """Mean of each logged value over the micro-batches that reported it, and over processes."""
        if not sums:
            return {}
        keys = sorted(sums)
        t = torch.tensor([sums[k] / counts[k] for k in keys], dtype=torch.float64, device=self.device)
        t = self.accelerator.reduce(t, reduction="mean") if self.accelerator.num_processes > 1 else t
        return dict(zip(keys, t.tolist()))

    def fit(self) -> dict[str, Any]:
        """Train to ``max_steps`` (resuming if asked); returns a summary dict."""
        from accelerate.utils import send_to_device

        acc = self.accelerator
        self._start()
        start_step = self.step
        bar = tqdm(total=self.max_steps, initial=self.step, desc="train", disable=not (self.progress and acc.is_main_process))
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        t0 = time.perf_counter()
        t_seg = t0
        batches = iter(self._loader()) if self.step < self.max_steps else iter(())
        models = list(self.models.values())
        while self.step < self.max_steps:
            for _ in range(self.accumulation):
                batch = next(batches)
                batch = send_to_device(batch, self.device, non_blocking=True)
                with acc.accumulate(*models), acc.autocast():
                    logs = self.step_fn(self, batch)
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                    counts[k] = counts.get(k, 0) + 1
            self.step += 1
            bar.update(1)
            now = time.perf_counter()
            self.seconds += now - t_seg
            t_seg = now
            row: dict[str, Any] = {}
            if self.step % self.log_every == 0 or self.step == self.max_steps:
                row = self._reduce(sums, counts)
                sums, counts = {}, {}
                self.last_logs = dict(row)
                bar.set_postfix({k: f"{v:.4g}" for k, v in list(row.items())[:4]})
            if self.val_every and self.step % self.val_every == 0 or self.step == self.max_steps:
                row.update(self._validate())
                t_seg = time.perf_counter()  # validation time is not training time
            if row and acc.is_main_process:
                self.log.append({"step": self.step, "seconds": round(self.seconds, 3), **row})
            if (self.checkpoint_every and self.step % self.checkpoint_every == 0) or self.step == self.max_steps:
                self.save_checkpoint()
                t_seg = time.perf_counter()
        bar.close()
        trained = self.step - start_step
        elapsed = time.perf_counter() - t0
        return {
            "steps": self.step,
            "steps_this_run": trained,
            "train_seconds": round(self.seconds, 3),
            "wall_seconds_this_run": round(elapsed, 3),
            "steps_per_second": round(trained / elapsed, 4) if trained and elapsed > 0 else None,
            "num_processes": acc.num_processes,
            "last": self.last_logs,
            "val": self.last_val,
        }


# --------------------------------------------------------------------------------------
# the VQ-GAN
# --------------------------------------------------------------------------------------
@contextlib.contextmanager
def frozen(*modules: nn.Module | None):
    """Temporarily set ``requires_grad=False`` on the modules' parameters."""
    params = [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def make_vqgan_step(loss_fn) -> Callable[[Trainer, Any], dict[str, float]]:
    """The step function of VQ-GAN training with the losses of ``loss_fn`` (a
    :class:`~medlsdm.losses.VQGANLoss`); the trainer's models are ``"vqgan"`` and, when
    adversarial losses are on, ``"disc2d"``/``"disc3d"`` with optimisers ``"generator"`` and
    ``"discriminator"``."""

    def step(trainer: Trainer, batch) -> dict[str, float]:
        return vqgan_step(trainer, batch, loss_fn)

    return step


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Use ``n`` torch CPU threads inside the block, then restore the previous number."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def vqgan_step(trainer: Trainer, batch, loss_fn) -> dict[str, float]:
    """One micro-batch of VQ-GAN training: generator update, then (from ``disc_start`` on)
    discriminator update.

    The generator's adversarial terms use the *plain* discriminators with frozen parameters
    (so no gradient reaches them and, under several processes, no gradient sync is
    triggered); the discriminator step uses the prepared ones on the detached reconstruction.
    """
    x, labels = batch
    vq = trainer.models["vqgan"]
    spade = trainer.unwrap("vqgan").config.decoder_type == "spade"
    out = vq(x, labels=labels if spade else None)
    plain = {n: trainer.unwrap(n) if n in trainer.models else None for n in ("disc2d", "disc3d")}
    with frozen(*plain.values()):
        loss_g, logs = loss_fn.generator_loss(
            x, out.reconstruction, out.commitment_loss, trainer.step,
            disc2d=plain["disc2d"], disc3d=plain["disc3d"], generator=trainer.generator,
        )
    trainer.backward(loss_g)
    norm = trainer.optimizer_step("generator")
    if norm is not None:
        logs["grad_norm_g"] = norm
    logs["usage"] = float(out.usage)
    logs["perplexity"] = float(out.perplexity)
    if loss_fn.has_discriminators and trainer.step >= loss_fn.disc_start:
        loss_d, dlogs = loss_fn.discriminator_loss(
            x, out.reconstruction, trainer.step,
            disc2d=trainer.models.get("disc2d"), disc3d=trainer.models.get("disc3d"),
            generator=trainer.generator,
        )
        trainer.backward(loss_d)
        trainer.optimizer_step("discriminator")
        logs.update(dlogs)
    return logs


#: Defaults of :func:`train_vqgan`. Architecture and loss weights follow Med-LSDM; the
#: optimisation (Adam betas (0.9, 0.999), lr 1e-3 with 20 warm-up steps and a cosine decay,
#: batches of 4 crops of 16×32×32) is what reached the notebook-02 quality bar fastest on
#: CPU (Med-LSDM itself: constant lr 3e-4, betas (0.5, 0.9), batch 2).
VQGAN_DEFAULTS: dict[str, Any] = dict(
    # data
    crop_shape=(16, 32, 32), batch_size=4, seed=0, num_workers=0,
    # model (Med-LSDM: channels 16→32→64, 4× per axis, 8-dim codes)
    channels=(16, 32, 64), num_res_blocks=1, embedding_dim=8, num_embeddings=512,
    norm_num_groups=8, decoder="normal", spade_hidden_channels=16, restart_after=20,
    commitment_cost=0.25, ema_decay=0.99,
    # losses
    l1_weight=4.0, perceptual_weight=4.0, perceptual_weights=None,
    gan_weight_2d=1.0, gan_weight_3d=1.0, feat_weight=4.0, disc_start=10_000,
    disc_channels=64, disc_layers=3,
    # optimisation
    steps=500, lr=1e-3, lr_schedule="cosine", warmup_steps=20, disc_lr=3e-4, betas=(0.9, 0.999),
    gradient_accumulation_steps=1,
    max_grad_norm=1.0, mixed_precision="no", gradient_checkpointing=False,
    # bookkeeping
    checkpoint_every=500, keep_checkpoints=2, log_every=25, val_every=None, val_cases=4,
    resume=True, progress=True,
    # torch CPU threads during training only (None: leave torch's setting); 1 is much faster
    # than 2 when other jobs share the cores (OpenMP threads then wait for each other)
    num_threads=None,
)


def _case_store(path: Path):
    from .data.store import CaseStore

    return CaseStore(path)


def train_vqgan(run_dir: str | os.PathLike, *, store: Mapping | None = None,
                split: Mapping[str, Sequence[str]] | None = None, num_classes: int | None = None,
                **params: Any) -> dict[str, Any]:
    """Train the VQ-GAN of a run on random crops of its training cases.

    Reads ``RUN/data/cases.h5`` and ``RUN/data/split.json`` (written by notebook 01) unless
    ``store``/``split`` are given; writes ``RUN/vqgan/model`` (``save_pretrained``),
    ``RUN/vqgan/checkpoints/``, ``RUN/vqgan/log.csv`` and ``RUN/vqgan/train_params.json``.
    Run it in a notebook, or in a script under ``accelerate launch`` for several processes.

    Args:
        run_dir: the run directory.
        store: a case store to use instead of ``RUN/data/cases.h5``.
        split: ``{"train": [...], "val": [...]}`` instead of ``RUN/data/split.json``.
        num_classes: label classes for the SPADE decoder (default: from the manifest, or the
            largest label + 1 of the training cases).
        params: any key of :data:`VQGAN_DEFAULTS` (unknown keys raise ``ConfigError``):
            ``crop_shape`` (each side divisible by 4), ``batch_size`` (per process),
            ``steps`` (optimiser steps), ``lr``, ``lr_schedule`` (``"constant"|"cosine"``),
            ``warmup_steps``, ``channels``, ``num_embeddings``,
            ``decoder`` (``"normal"|"spade"``), ``disc_start`` (adversarial losses from this
            step on), ``gan_weight_2d``/``gan_weight_3d`` (both 0: no discriminators at all),
            ``perceptual_weights`` (local VGG16
            file; ``None``: off), ``mixed_precision``, ``gradient_checkpointing``,
            ``checkpoint_every``, ``val_every`` / ``val_cases`` (validation on that many
            val cases), ``resume``, ``num_threads`` (CPU threads while training) …

    Returns:
        The trainer summary (``steps``, ``train_seconds``, ``steps_per_second``, last
        losses, last validation) plus ``model_dir``.
    """
    from .losses import VQGANLoss
    from .metrics import evaluate_reconstruction
    from .models.vqgan import VQGAN
    from .rundir import RunDir

    unknown = sorted(set(params) - set(VQGAN_DEFAULTS))
    if unknown:
        raise ConfigError(f"train_vqgan: unknown parameter(s) {unknown}; known: {sorted(VQGAN_DEFAULTS)}")
    p = {**VQGAN_DEFAULTS, **params}
    run = RunDir(run_dir)
    data_dir = run.root / "data"
    if store is None:
        store = _case_store(data_dir / "cases.h5")
    if split is None:
        from .data.splits import load_split

        split = load_split(data_dir / "split.json")
    train_ids = list(split.get("train", []))
    val_ids = list(split.get("val", []))[: int(p["val_cases"])]
    factor = 2 ** (len(p["channels"]) - 1)
    crop = tuple(int(s) for s in p["crop_shape"]) if p["crop_shape"] is not None else None
    if crop is not None and any(s % factor for s in crop):
        raise ConfigError(f"crop_shape {crop} must be divisible by {factor} (the VQ-GAN's downsampling)")
    if p["decoder"] == "spade" and num_classes is None:
        num_classes = _num_classes(data_dir, store, train_ids)
    dataset = RandomCropDataset(store, train_ids, crop, seed=p["seed"])
    spatial_dims = len(crop) if crop is not None else dataset._case(train_ids[0])[0].ndim - 1

    torch.manual_seed(p["seed"])  # identical initial weights on every process
    model = VQGAN(
        spatial_dims=spatial_dims, channels=tuple(p["channels"]), num_res_blocks=p["num_res_blocks"],
        embedding_dim=p["embedding_dim"], num_embeddings=p["num_embeddings"],
        norm_num_groups=p["norm_num_groups"], decoder_type=p["decoder"], num_classes=num_classes or 0,
        spade_hidden_channels=p["spade_hidden_channels"], commitment_cost=p["commitment_cost"],
        ema_decay=p["ema_decay"], restart_after=p["restart_after"],
    )
    if p["gradient_checkpointing"]:
        model.enable_gradient_checkpointing()
    loss_fn = VQGANLoss(
        spatial_dims=spatial_dims, l1_weight=p["l1_weight"], perceptual_weight=p["perceptual_weight"],
        perceptual_weights=p["perceptual_weights"],
        gan_weight_2d=p["gan_weight_2d"], gan_weight_3d=p["gan_weight_3d"],
        feat_weight=p["feat_weight"], disc_start=p["disc_start"],
        disc_channels=p["disc_channels"], disc_layers=p["disc_layers"],
    )
    if not loss_fn.has_discriminators:
        log.info("adversarial losses off: gan_weight_2d = gan_weight_3d = 0")
    elif p["disc_start"] >= p["steps"]:
        log.info("adversarial losses start at step %s, after this run's %s steps", p["disc_start"], p["steps"])
    models: dict[str, nn.Module] = {"vqgan": model}
    optimizers: dict[str, torch.optim.Optimizer] = {
        "generator": torch.optim.Adam(model.parameters(), lr=p["lr"], betas=tuple(p["betas"])),
    }
    schedulers = {"generator": lr_scheduler(optimizers["generator"], p["lr_schedule"], p["steps"], p["warmup_steps"])}
    discs = {"disc2d": loss_fn.disc2d, "disc3d": loss_fn.disc3d}
    discs = {n: d for n, d in discs.items() if d is not None}
    if discs:
        models.update(discs)
        optimizers["discriminator"] = torch.optim.Adam(
            [q for d in discs.values() for q in d.parameters()], lr=p["disc_lr"], betas=tuple(p["betas"]))

    def val_fn(trainer: Trainer) -> dict[str, float]:
        if not val_ids:
            return {}
        res = evaluate_reconstruction(trainer.unwrap("vqgan"), store, val_ids, device=trainer.device, progress=False)
        return {k: res[k] for k in ("psnr", "ssim", "baseline_psnr", "psnr_gain", "usage", "perplexity")}

    out_dir = run.vqgan
    trainer = Trainer(
        models=models, optimizers=optimizers, step_fn=make_vqgan_step(loss_fn), dataset=dataset, out_dir=out_dir,
        max_steps=p["steps"], batch_size=p["batch_size"],
        gradient_accumulation_steps=p["gradient_accumulation_steps"], max_grad_norm=p["max_grad_norm"],
        mixed_precision=p["mixed_precision"], checkpoint_every=p["checkpoint_every"],
        keep_checkpoints=p["keep_checkpoints"], log_every=p["log_every"],
        val_fn=val_fn if val_ids else None, val_every=p["val_every"], seed=p["seed"],
        resume=p["resume"], num_workers=p["num_workers"], progress=p["progress"], schedulers=schedulers,
    )
    loss_fn.to(trainer.device)  # the perceptual network (the discriminators are prepared already)
    if trainer.is_main_process:
        write_json(out_dir / "train_params.json", {**_jsonable(p), "num_classes": num_classes})
    with torch_threads(p["num_threads"]):
        summary = trainer.fit()
    model_dir = out_dir / "model"
    if trainer.is_main_process:
        _save_pretrained_atomic(trainer.unwrap("vqgan"), model_dir)
    trainer.accelerator.wait_for_everyone()
    summary["model_dir"] = str(model_dir)
    trainer.accelerator.end_training()
    return summary


def lr_scheduler(optimizer: torch.optim.Optimizer, schedule: str, steps: int, warmup_steps: int = 0):
    """A ``LambdaLR``: linear warm-up over ``warmup_steps``, then ``"constant"`` or ``"cosine"``
    (half a cosine from the base rate down to 1 % of it at ``steps``)."""
    import math

    if schedule not in ("constant", "cosine"):
        raise ConfigError(f"lr_schedule must be 'constant' or 'cosine', got {schedule!r}")
    warmup_steps = max(int(warmup_steps), 0)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        t = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in params.items():
        out[k] = list(v) if isinstance(v, tuple) else (str(v) if isinstance(v, os.PathLike) else v)
    return out


def _num_classes(data_dir: Path, store, train_ids: Sequence[str]) -> int:
    manifest = data_dir / "manifest.json"
    if manifest.is_file():
        from .data.prepare import load_manifest

        classes = load_manifest(data_dir).get("classes")
        if classes:
            return len(classes)
    return int(max(int(np.asarray(store[c][1]).max()) for c in train_ids)) + 1


def _save_pretrained_atomic(model, folder: Path) -> None:
    """``save_pretrained`` into a temporary folder, then swap it in place of ``folder``."""
    import shutil
    import tempfile

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_vqgan(run_dir: str | os.PathLike, device: str | torch.device = "cpu"):
    """The trained VQ-GAN of a run (``RUN/vqgan/model``), in eval mode."""
    from .models.vqgan import VQGAN

    folder = Path(run_dir) / "vqgan" / "model"
    if not (folder / "config.json").is_file():
        raise DataError(f"{folder}: no trained VQ-GAN here; run notebook 02_vqgan_training first")
    return VQGAN.from_pretrained(folder).to(device).eval()
