"""The generic training loop on Hugging Face ``accelerate``.

:class:`Trainer` runs any model(s) for a number of optimiser steps, given a *step
function* that computes the losses of one micro-batch and calls :meth:`Trainer.backward`
and :meth:`Trainer.optimizer_step`. It takes care of what every training needs: mixed
precision (``no|bf16|fp16``), gradient accumulation and clipping, seeded random crops
sharded over the processes, a ``tqdm`` progress bar, an append-only CSV loss log,
validation, atomic checkpoints (models with their buffers, optimisers, RNG states, step and
the fingerprint of the settings and inputs, :mod:`~medlsdm.training.checkpoint`), resuming
from the last checkpoint only when its fingerprint agrees, and a stop at a non-finite loss.
The same code runs on one CPU, a GPU, or several processes started with ``accelerate
launch``; the latent diffusion training reuses it with its own step function.

Several processes: ``accelerate launch --multi_gpu --num_processes N script.py`` (or
``torchrun --nproc_per_node N script.py``); on a machine without a GPU the processes use the
gloo backend on the CPU (``accelerate launch --cpu`` alone starts a single process unless
MPI is set up).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import gather_object, send_to_device, set_seed
from torch import nn
from tqdm.auto import tqdm

from ..atomic import atomic_path
from ..errors import ConfigError, MedLSDMError
from .checkpoint import (
    CHECKPOINT_FORMAT,
    check_fingerprint,
    list_checkpoints,
    read_checkpoint,
    rng_state,
    set_rng_state,
)
from .cores import follow_free_cores
from .datasets import StepBatches
from .log import CSVLog

log = logging.getLogger(__name__)


MIXED_PRECISION = ("no", "bf16", "fp16")
#: What a resume does when the checkpoint's fingerprint differs: raise ``ConfigError``, or start afresh.
ON_CHANGE = ("refuse", "retrain")


class TrainingError(MedLSDMError):
    """Training cannot go on (a non-finite loss); nothing was written after the last good checkpoint."""


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
            one; with ``False`` old checkpoints, log and ``fresh_outputs`` are removed.
        fingerprint: what made the weights besides the step count
            (:func:`~medlsdm.training.checkpoint.fingerprint`), saved in every checkpoint.
        on_change: when the last checkpoint's fingerprint differs from ``fingerprint``:
            ``"refuse"`` raises ``ConfigError`` naming what changed, ``"retrain"`` logs it and
            starts afresh.
        fresh_outputs: glob patterns of other files in ``out_dir`` that one training makes
            (e.g. samples), removed with the checkpoints when training starts afresh.
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
        fingerprint: Mapping[str, Any] | None = None,
        on_change: str = "refuse",
        fresh_outputs: Sequence[str] = (),
    ):

        if mixed_precision not in MIXED_PRECISION:
            raise ConfigError(f"mixed_precision must be one of {MIXED_PRECISION}, got {mixed_precision!r}")
        if on_change not in ON_CHANGE:
            raise ConfigError(f"on_change must be one of {ON_CHANGE}, got {on_change!r}")
        for name, value in (
            ("max_steps", max_steps),
            ("batch_size", batch_size),
            ("gradient_accumulation_steps", gradient_accumulation_steps),
            ("log_every", log_every),
            ("keep_checkpoints", keep_checkpoints),
        ):
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

        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
        self.accelerator = Accelerator(
            mixed_precision=mixed_precision, gradient_accumulation_steps=int(gradient_accumulation_steps), **kwargs
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
        self.fingerprint = dict(fingerprint or {})
        self.on_change = on_change
        self.fresh_outputs = tuple(fresh_outputs)
        self.changes: list[str] = []  # what differed from the checkpoint when training started afresh
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
        self.optimizers = dict(zip(optimizers, prepared[len(names) :]))
        self._opt_params = {n: [p for g in opt.param_groups for p in g["params"]] for n, opt in self.optimizers.items()}

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
        """``accelerator.backward`` (scales for accumulation and fp16), after checking that the
        loss is finite on every process; a NaN or inf raises :class:`TrainingError` before it
        reaches the weights, so no checkpoint is written or pruned after the last good one."""
        bad = (~torch.isfinite(loss.detach())).any().float().reshape(1)
        if self.accelerator.num_processes > 1:
            bad = self.accelerator.reduce(bad, reduction="sum")
        if bool(bad.item()):
            found = list_checkpoints(self.checkpoint_dir)
            last = f"the last good checkpoint, {found[-1][1]}, is kept" if found else "there is no checkpoint yet"
            raise TrainingError(
                f"{self.out_dir}: the loss is not finite at step {self.step + 1} "
                f"({float(loss.detach().float().mean())} "
                f"on process {self.accelerator.process_index}); training stopped ({last}). "
                "Try a lower lr, max_grad_norm, mixed_precision='no', or check the data"
            )
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

        acc = self.accelerator
        rng = gather_object([rng_state(self.generator)])  # every process' RNG, in rank order
        path = self.checkpoint_dir / f"checkpoint-{self.step:07d}.pt"
        if acc.is_main_process:
            state = {
                "format": CHECKPOINT_FORMAT,
                "step": self.step,
                "fingerprint": self.fingerprint,
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

    def load_checkpoint(self, path: str | os.PathLike, state: Mapping[str, Any] | None = None) -> None:
        """Restore models, optimisers, extra state, RNG states and step from ``path`` (its
        contents ``state`` when already read with :func:`~medlsdm.training.checkpoint.read_checkpoint`)."""
        acc = self.accelerator
        path = Path(path)
        state = read_checkpoint(path) if state is None else state
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
            set_rng_state(state["rng"][acc.process_index], self.generator)
        else:
            log.warning(
                "%s was written by %s process(es), now %d: random states are reseeded",
                path,
                state.get("num_processes"),
                acc.num_processes,
            )
            self._seed(offset=self.step)

    def _seed(self, offset: int = 0) -> None:

        set_seed(self.seed + offset, device_specific=True)
        self.generator.manual_seed((self.seed + offset) * 1000 + self.accelerator.process_index)

    def _start(self) -> None:
        acc = self.accelerator
        found = list_checkpoints(self.checkpoint_dir)
        state = read_checkpoint(found[-1][1]) if self.resume and found else None
        self.changes = check_fingerprint(found[-1][1], state, self.fingerprint, self.on_change) if state else []
        acc.wait_for_everyone()  # every process has read the checkpoint before any removes it
        if state is not None and not self.changes:
            step, path = found[-1]
            self.load_checkpoint(path, state)
            log.info("resumed from %s (step %d of %d)", path, self.step, self.max_steps)
            if self.step >= self.max_steps:
                log.warning(
                    "%s is at step %d >= max_steps=%d: nothing to train (resume=False starts afresh)",
                    path,
                    self.step,
                    self.max_steps,
                )
            if acc.is_main_process:
                self.log.truncate_after(self.step)
                rows = self.log.read()  # a rerun with nothing left to train still reports the last losses
                last = {
                    k: float(v)
                    for k, v in (rows[-1] if rows else {}).items()
                    if v not in ("", None) and k not in ("step", "seconds")
                }
                self.last_val = {k: v for k, v in last.items() if k.startswith("val_")}  # and validation
                self.last_logs = {k: v for k, v in last.items() if not k.startswith("val_")}
        else:
            stale = [p for pattern in self.fresh_outputs for p in self.out_dir.glob(pattern)]
            if acc.is_main_process and (found or stale or self.log.path.exists()):
                log.info(
                    "starting afresh: removing %d old checkpoint(s), %d other output(s) and the log in %s",
                    len(found),
                    len(stale),
                    self.out_dir,
                )
                for path in [p for _, p in found] + stale:
                    path.unlink(missing_ok=True)
                self.log.path.unlink(missing_ok=True)
            self._seed()
        acc.wait_for_everyone()

    # -- the loop ------------------------------------------------------------------------
    def _loader(self):
        sampler = StepBatches(
            self.step,
            self.batch_size,
            self.accumulation,
            self.accelerator.process_index,
            self.accelerator.num_processes,
        )
        # its own generator: creating the iterator must not consume the global torch RNG,
        # or a resumed run would draw different random numbers than an uninterrupted one
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=self.num_workers,
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

        acc = self.accelerator
        self._start()
        start_step = self.step
        bar = tqdm(
            total=self.max_steps, initial=self.step, desc="train", disable=not (self.progress and acc.is_main_process)
        )
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
                follow_free_cores()  # a lane beside this one may have ended (medlsdm run --jobs 2)
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
            "retrained_because": self.changes,
        }
