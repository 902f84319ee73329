"""Tests of medlsdm.training: log, crops, checkpoint/resume, two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from medlsdm.errors import ConfigError, DataError
from medlsdm.training.datasets import ArrayStore, RandomCropDataset
from medlsdm.training.log import CSVLog
from medlsdm.training.trainer import list_checkpoints
from medlsdm.training.vqgan import load_vqgan, train_vqgan

pytestmark = pytest.mark.usefixtures("one_thread")


def make_store(n=4, shape=(12, 16, 16), seed=0):
    rng = np.random.default_rng(seed)
    store = ArrayStore()
    for i in range(n):
        label = np.zeros(shape, dtype=np.int64)
        c = rng.integers(2, shape[1] - 6, size=3)
        label[:, c[1] : c[1] + 5, c[2] : c[2] + 5] = 1
        label[: shape[0] // 2, 2:5, 2:5] = 2
        image = (label * 0.6 - 0.8 + rng.normal(0, 0.05, shape)).clip(-1, 1).astype(np.float32)[None]
        store[f"case_{i}"] = (image, label, np.eye(4))
    return store


SPLIT = {"train": ["case_0", "case_1", "case_2"], "val": ["case_3"], "test": []}
TINY = dict(
    crop_shape=(8, 8, 8),
    batch_size=2,
    channels=(8, 8, 8),
    num_embeddings=16,
    embedding_dim=4,
    norm_num_groups=4,
    disc_channels=4,
    disc_layers=1,
    gan_weight_2d=1.0,
    gan_weight_3d=1.0,
    restart_after=2,
    progress=False,
)


def test_csv_log_append_new_column_truncate(tmp_path):
    log = CSVLog(tmp_path / "log.csv")
    log.append({"step": 1, "loss": 0.5})
    log.append({"step": 2, "loss": 0.25})
    log.append({"step": 3, "loss": 0.125, "val_psnr": 30.0})  # new column → rewritten
    rows = log.read()
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["val_psnr"] == "" and rows[2]["val_psnr"] == "30"
    log.truncate_after(2)
    assert [r["step"] for r in log.read()] == ["1", "2"]
    assert not list(tmp_path.glob(".*tmp*"))


def test_random_crops_are_seeded(tmp_path):
    store = make_store()
    ds = RandomCropDataset(store, SPLIT["train"], (4, 8, 8), seed=3)
    a, la = ds[17]
    b, lb = RandomCropDataset(store, SPLIT["train"], (4, 8, 8), seed=3)[17]
    assert a.shape == (1, 4, 8, 8) and la.shape == (4, 8, 8) and la.dtype == torch.int64
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not all(torch.equal(ds[i][0], a) for i in range(18, 24))
    with pytest.raises(DataError, match="smaller than crop_shape"):
        RandomCropDataset(store, SPLIT["train"], (16, 8, 8))
    with pytest.raises(DataError, match="not found"):
        RandomCropDataset(store, ["nope"], (4, 8, 8))


def test_bad_parameters(tmp_path):
    with pytest.raises(ConfigError, match="unknown parameter"):
        train_vqgan(tmp_path, store=make_store(), split=SPLIT, stepz=3)
    with pytest.raises(ConfigError, match="divisible by 4"):
        train_vqgan(tmp_path, store=make_store(), split=SPLIT, **{**TINY, "crop_shape": (6, 8, 8)})
    with pytest.raises(ConfigError, match="mixed_precision"):
        train_vqgan(tmp_path, store=make_store(), split=SPLIT, steps=1, mixed_precision="fp8", **{**TINY})


def _state(run):
    ckpt = list_checkpoints(Path(run) / "vqgan" / "checkpoints")[-1][1]
    return torch.load(ckpt, weights_only=True)


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    params = dict(TINY, decoder_type="spade", disc_start=2, checkpoint_every=2, log_every=1, seed=5)
    store = make_store()
    full = train_vqgan(tmp_path / "full", store=store, split=SPLIT, steps=4, **params)
    first = train_vqgan(tmp_path / "resumed", store=store, split=SPLIT, steps=2, **params)
    assert first["steps"] == 2
    second = train_vqgan(tmp_path / "resumed", store=store, split=SPLIT, steps=4, **params)
    assert second["steps"] == 4 and second["steps_this_run"] == 2 and full["steps_this_run"] == 4
    a, b = _state(tmp_path / "full"), _state(tmp_path / "resumed")
    assert a["step"] == b["step"] == 4
    for name in ("vqgan", "disc2d", "disc3d"):
        for key, value in a["models"][name].items():
            assert torch.allclose(value.float(), b["models"][name][key].float(), atol=1e-6, rtol=0), (name, key)
    assert a["models"]["vqgan"]["quantizer.codebook"].abs().sum() > 0
    for name in ("generator", "discriminator"):
        sa, sb = a["optimizers"][name]["state"], b["optimizers"][name]["state"]
        assert all(torch.allclose(sa[k]["exp_avg"], sb[k]["exp_avg"], atol=1e-6) for k in sa)
    log = CSVLog(tmp_path / "resumed" / "vqgan" / "log.csv").read()
    assert [int(r["step"]) for r in log] == [1, 2, 3, 4]
    assert float(log[-1]["l1"]) == pytest.approx(full["last"]["l1"], abs=1e-6)
    again = train_vqgan(tmp_path / "resumed", store=store, split=SPLIT, steps=4, **params)  # nothing left to train
    assert again["steps_this_run"] == 0 and again["last"]["l1"] == pytest.approx(full["last"]["l1"], abs=1e-6)
    assert full["val"] and again["val"] == pytest.approx(
        full["val"], rel=1e-5
    )  # from the log (6 digits): what 06 prints
    assert not any(k.startswith("val_") for k in again["last"])
    model = load_vqgan(tmp_path / "resumed")
    assert model.config.decoder_type == "spade" and not model.training
    # starting afresh removes the old checkpoints
    train_vqgan(tmp_path / "resumed", store=store, split=SPLIT, steps=1, resume=False, **params)
    assert [s for s, _ in list_checkpoints(tmp_path / "resumed" / "vqgan" / "checkpoints")] == [1]


def test_resume_with_a_changed_setting_or_input_is_refused_or_retrains(tmp_path):
    """A checkpoint carries the settings (less the step count and bookkeeping) and digests of the
    data and split: resuming it under others raises ConfigError naming them (old -> new) and
    writes nothing; on_change="retrain" trains afresh; train_params.json describes the saved model."""
    params = dict(TINY, checkpoint_every=1, seed=1)
    store = make_store()
    train_vqgan(tmp_path, store=store, split=SPLIT, steps=2, lr=1e-3, **params)
    more = train_vqgan(tmp_path, store=store, split=SPLIT, steps=3, lr=1e-3, log_every=2, **params)  # bookkeeping
    assert more["steps_this_run"] == 1 and more["retrained_because"] == []
    with pytest.raises(ConfigError, match=r"lr: 0\.001 -> 0\.002.*resume=False"):
        train_vqgan(tmp_path, store=store, split=SPLIT, steps=4, lr=2e-3, **params)
    with pytest.raises(ConfigError, match="input cases"):
        train_vqgan(tmp_path, store=make_store(seed=1), split=SPLIT, steps=4, lr=1e-3, **params)
    with pytest.raises(ConfigError, match="input split"):
        train_vqgan(tmp_path, store=store, split={**SPLIT, "val": []}, steps=4, lr=1e-3, **params)
    saved = json.loads((tmp_path / "vqgan" / "train_params.json").read_text())
    assert (
        saved["lr"] == 1e-3 and saved["steps"] == 3 and _state(tmp_path)["step"] == 3
    )  # the refused runs wrote nothing
    again = train_vqgan(tmp_path, store=store, split=SPLIT, steps=2, lr=2e-3, on_change="retrain", **params)
    assert again["steps_this_run"] == 2 and again["retrained_because"] == ["lr: 0.001 -> 0.002"]
    assert _state(tmp_path)["fingerprint"]["settings"]["lr"] == 2e-3
    saved = json.loads((tmp_path / "vqgan" / "train_params.json").read_text())
    assert saved["lr"] == 2e-3 and saved["steps"] == 2 and saved["fingerprint"] == _state(tmp_path)["fingerprint"]


class _Planted:
    """Unpickling it creates a file: what a malicious checkpoint could do with any code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_planted_pickle_is_refused_without_running_it(tmp_path):
    folder = tmp_path / "vqgan" / "checkpoints"
    folder.mkdir(parents=True)
    marker = tmp_path / "marker"
    torch.save({"format": 2, "step": 9999999, "payload": _Planted(marker)}, folder / "checkpoint-9999999.pt")
    with pytest.raises(DataError, match="checkpoint-9999999.pt: refused.*can run code"):
        train_vqgan(tmp_path, store=make_store(), split=SPLIT, steps=1, **TINY)
    assert not marker.exists()
    assert (folder / "checkpoint-9999999.pt").exists()  # refused, not silently removed
    # a checkpoint of the old format (numpy random state pickled) is refused the same way; resume=False retrains
    torch.save(
        {"format": 1, "step": 9999999, "rng": [{"numpy": np.random.get_state()}]}, folder / "checkpoint-9999999.pt"
    )
    with pytest.raises(DataError, match="refused.*numpy.*before checkpoint format 2.*resume=False"):
        train_vqgan(tmp_path, store=make_store(), split=SPLIT, steps=1, **TINY)
    train_vqgan(tmp_path, store=make_store(), split=SPLIT, steps=1, resume=False, **TINY)
    assert [s for s, _ in list_checkpoints(folder)] == [1]


def test_a_non_finite_loss_stops_training_before_any_checkpoint(tmp_path):
    from medlsdm.training.trainer import Trainer, TrainingError

    class Numbers(torch.utils.data.Dataset):
        def __getitem__(self, i):
            return torch.tensor([float(i % 5)])

    model = torch.nn.Linear(1, 1)

    def step_fn(trainer, x):
        loss = trainer.models["m"](x).pow(2).mean() * (float("nan") if trainer.step >= 2 else 1.0)
        trainer.backward(loss)
        trainer.optimizer_step("m")
        return {"loss": float(loss.detach())}

    trainer = Trainer(
        models={"m": model},
        optimizers={"m": torch.optim.SGD(model.parameters(), lr=0.01)},
        step_fn=step_fn,
        dataset=Numbers(),
        out_dir=tmp_path,
        max_steps=4,
        checkpoint_every=1,
        keep_checkpoints=2,
        log_every=1,
        progress=False,
    )
    with pytest.raises(TrainingError, match=r"loss is not finite at step 3 \(nan.*checkpoint-0000002.pt, is kept"):
        trainer.fit()
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [1, 2]  # none written or pruned
    good = torch.load(tmp_path / "checkpoints" / "checkpoint-0000002.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in good["models"]["m"].values())
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())  # the NaN never reached the weights


SCRIPT = textwrap.dedent("""
    import hashlib, os, sys
    sys.path.insert(0, {tests!r})
    from test_training import SPLIT, TINY, make_store
    from medlsdm.training.trainer import Trainer
    from medlsdm.training.vqgan import train_vqgan

    trainers = []
    fit = Trainer.fit
    Trainer.fit = lambda self: trainers.append(self) or fit(self)
    run = sys.argv[1]
    summary = train_vqgan(run, store=make_store(), split=SPLIT, steps=2, checkpoint_every=2,
                          decoder_type="spade", disc_start=1, log_every=1, **TINY)
    rank = int(os.environ.get("RANK", "0"))
    assert summary["num_processes"] == 2, summary
    # every process must hold the same weights, codebook and discriminators after training
    state = {{f"{{name}}.{{n}}": m for name in ("vqgan", "disc2d", "disc3d")
             for n, m in trainers[0].unwrap(name).state_dict().items()}}
    digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in state.values())).hexdigest()
    open(os.path.join(run, f"rank{{rank}}.txt"), "w").write(digest)
""")


@pytest.mark.timeout(240)
def test_two_processes_write_one_checkpoint(tmp_path):
    script = tmp_path / "train2.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "CUDA_VISIBLE_DEVICES": ""}
    # on CPU, --multi_gpu makes accelerate start the processes with torchrun; the Trainer then
    # picks the gloo backend (``--cpu`` alone would start a single process without MPI)
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(29500 + os.getpid() % 1000),
        str(script),
        str(run),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=230)
    assert proc.returncode == 0, proc.stderr[-4000:]
    folder = run / "vqgan" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-0000002.pt"]  # no temp files either
    state = torch.load(folder / "checkpoint-0000002.pt", weights_only=True)
    assert state["written_by_process"] == 0 and state["num_processes"] == 2
    assert len(state["rng"]) == 2  # both processes' random states, for an exact resume
    assert (run / "rank0.txt").read_text() == (run / "rank1.txt").read_text()
    rows = CSVLog(run / "vqgan" / "log.csv").read()
    assert [r["step"] for r in rows] == ["1", "2"]  # logged once, by the main process


def test_lr_scheduler():
    from medlsdm.training.lr_schedule import lr_scheduler

    def lrs(schedule, warmup):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = lr_scheduler(opt, schedule, steps=10, warmup_steps=warmup)
        out = []
        for _ in range(11):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    assert lrs("constant", 0) == [1.0] * 11
    warm = lrs("constant", 4)
    assert warm[:5] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    cos = lrs("cosine", 2)
    assert cos[:3] == pytest.approx([0.5, 1.0, 1.0]) and cos[6] == pytest.approx(0.01 + 0.99 * 0.5)
    assert cos[10] == pytest.approx(0.01) and all(a >= b for a, b in zip(cos[2:], cos[3:]))
    with pytest.raises(ConfigError, match="lr_schedule"):
        lrs("linear", 0)
