"""Synthesis helpers, the class-intensity check and the ``medlsdm synthesize`` command."""

import nibabel as nib
import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

from medlsdm import cli
from medlsdm.data.io import write_nifti
from medlsdm.errors import ConfigError, DataError
from medlsdm.metrics.image import class_intensity_error
from medlsdm.pipelines.synthesis import synthesize_files, use_scheduler


def test_class_intensity_error_closed_form():
    labels = [np.array([[0, 0, 1, 1], [2, 2, 2, 2]])]
    real = [np.array([[-1.0, -1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])]
    synthetic = [np.array([[-1.0, -0.6, 0.5, 0.1], [1.0, 1.0, 1.0, 1.0]])]
    err = class_intensity_error(synthetic, real, labels, ["bg", "a", "b"], percentiles=(0, 100))
    # range of the real voxels = 2; bg means -0.8 vs -1, a: 0.3 vs 0, b: equal
    assert err == pytest.approx({"bg": 0.1, "a": 0.15, "b": 0.0})
    assert class_intensity_error(real, real, labels, ["bg", "a", "b", "absent"]) == {"bg": 0, "a": 0, "b": 0}
    with pytest.raises(DataError):
        class_intensity_error(synthetic, real, labels * 2, ["bg"])


def test_use_scheduler_keeps_the_schedule(tiny_pipeline):
    use_scheduler(tiny_pipeline, "dpm++")
    assert isinstance(tiny_pipeline.scheduler, DPMSolverMultistepScheduler)
    assert tiny_pipeline.scheduler.config.algorithm_type == "dpmsolver++"
    assert tiny_pipeline.scheduler.config.num_train_timesteps == 50
    use_scheduler(tiny_pipeline, "unipc")
    assert isinstance(tiny_pipeline.scheduler, UniPCMultistepScheduler)
    with pytest.raises(ConfigError, match="unknown scheduler"):
        use_scheduler(tiny_pipeline, "magic")


def _label_file(folder, name, affine, value=1):
    lab = np.zeros((8, 16, 16), np.uint8)
    lab[2:6, 4:12, 4:12] = value
    return write_nifti(folder / name, lab, affine, kind="label")


def test_synthesize_files_keeps_affine_and_no_source_header(tiny_pipeline, tmp_path):
    affine = np.array([[5.5, 0, 0, -30.0], [0, 5.5, 0, 4.0], [0, 0, 6.0, 100.0], [0, 0, 0, 1]])
    _label_file(tmp_path / "labels", "a.nii.gz", affine)
    _label_file(tmp_path / "labels", "b.nii.gz", affine, value=2)
    written = synthesize_files(tiny_pipeline, tmp_path / "labels", tmp_path / "out", steps=2, num_per_label=2)
    assert [p.name for p in written] == ["a_syn0.nii.gz", "a_syn1.nii.gz", "b_syn0.nii.gz", "b_syn1.nii.gz"]
    img = nib.load(written[0])
    np.testing.assert_allclose(img.affine, affine, atol=1e-5)
    assert img.header["descrip"].tobytes().strip(b"\0") == b""
    a0, a1 = (np.asarray(nib.load(p).dataobj) for p in written[:2])
    assert not np.allclose(a0, a1)  # different seeds per sample
    # same seed, same volume, whether sampled alone or in a batch of 4 (a list of files here)
    again = synthesize_files(
        tiny_pipeline, [tmp_path / "labels" / "a.nii.gz"], tmp_path / "again", steps=2, batch_size=1
    )
    np.testing.assert_allclose(np.asarray(nib.load(again[0]).dataobj), a0, atol=1e-5)
    with pytest.raises(ConfigError, match="3 generators for 2 samples"):
        tiny_pipeline(
            tmp_path / "labels" / "a.nii.gz",
            num_inference_steps=1,
            num_per_label=2,
            generator=[torch.Generator() for _ in range(3)],
        )


def test_bad_label_map_stops_before_any_sampling(tiny_pipeline, tmp_path):
    affine = np.diag([5.5, 5.5, 6.0, 1.0])
    _label_file(tmp_path / "labels", "a_good.nii.gz", affine)
    _label_file(tmp_path / "labels", "b_bad.nii.gz", affine, value=7)
    with pytest.raises(DataError, match="b_bad.nii.gz.*class indices"):
        synthesize_files(tiny_pipeline, tmp_path / "labels", tmp_path / "out", steps=2)
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataError, match="missing.nii.gz: label map not found"):
        synthesize_files(tiny_pipeline, tmp_path / "missing.nii.gz", tmp_path / "o2", steps=2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no .nii"):
        synthesize_files(tiny_pipeline, tmp_path / "empty", tmp_path / "o2", steps=2)


def test_cli_synthesize(tiny_pipeline, tmp_path, caplog):
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    label = _label_file(tmp_path, "lab.nii.gz", np.diag([5.5, 5.5, 6.0, 1.0]))
    code = cli.main(
        [
            "synthesize",
            "--pipeline",
            str(tmp_path / "pipe"),
            "--labels",
            str(label),
            "--out-dir",
            str(tmp_path / "out"),
            "--scheduler",
            "unipc",
            "--steps",
            "3",
        ]
    )
    assert code == 0 and (tmp_path / "out" / "lab_syn0.nii.gz").exists()
    code = cli.main(
        [
            "synthesize",
            "--pipeline",
            str(tmp_path / "nothing"),
            "--labels",
            str(label),
            "--out-dir",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "model_index.json missing" in caplog.text


def test_denoising_snapshots(tiny_pipeline):
    import torch

    labels = torch.randint(0, 3, (1, 8, 16, 16), generator=torch.Generator().manual_seed(0))
    from medlsdm.pipelines.synthesis import denoising_snapshots

    snaps = denoising_snapshots(tiny_pipeline, labels, steps=5, n_snapshots=3)
    assert [i for i, _, _ in snaps] == [0, 2, 4]
    final = tiny_pipeline(labels, num_inference_steps=5, generator=torch.Generator().manual_seed(0)).images
    np.testing.assert_allclose(snaps[-1][2], final, atol=1e-6)  # the last snapshot is the result


def test_cli_synthesize_deep_label_maps_in_windows_of_the_block(tiny_pipeline, tmp_path, one_thread):
    from diffusers import DDIMScheduler

    from medlsdm.pipelines.pipeline_medlsdm import MedLSDMPipeline

    pipe = MedLSDMPipeline(
        tiny_pipeline.vqgan,
        tiny_pipeline.unet,
        DDIMScheduler.from_config(tiny_pipeline.scheduler.config),
        spacing=[6.0, 5.5, 5.5],
        block_shape=[8, 16, 16],
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path / "pipe")
    deep = torch.randint(0, 3, (24, 16, 16), generator=torch.Generator().manual_seed(0))
    label = write_nifti(tmp_path / "deep.nii.gz", deep.numpy(), np.diag([5.5, 5.5, 6.0, 1.0]), kind="label")
    args = ["synthesize", "--pipeline", str(tmp_path / "pipe"), "--labels", str(label), "--steps", "2"]
    assert cli.main(args + ["--out-dir", str(tmp_path / "windowed")]) == 0
    assert cli.main(args + ["--out-dir", str(tmp_path / "one"), "--one-pass"]) == 0
    windowed, one = (np.asarray(nib.load(tmp_path / d / "deep_syn0.nii.gz").dataobj) for d in ("windowed", "one"))
    assert windowed.shape == one.shape == (16, 16, 24)  # (x, y, z) on disk
    expected = {
        d: pipe(deep, num_inference_steps=2, generator=torch.Generator().manual_seed(0), window=w).images[0, 0]
        for d, w in (("windowed", 8), ("one", None))
    }
    # written as float32 NIfTI, (D, H, W) -> (x, y, z); another pipeline instance: float32 rounding
    np.testing.assert_allclose(windowed.transpose(2, 1, 0), expected["windowed"], atol=1e-5)
    np.testing.assert_allclose(one.transpose(2, 1, 0), expected["one"], atol=1e-5)
    assert not np.allclose(windowed, one, atol=1e-3)


def test_samples_per_map_does_not_depend_on_batching(tiny_pipeline, one_thread):
    import torch

    from medlsdm.pipelines.synthesis import samples_per_map

    labels = torch.randint(0, 3, (3, 8, 16, 16), generator=torch.Generator().manual_seed(1)).numpy()
    big = samples_per_map(tiny_pipeline, labels, 2, steps=3, seed=5, batch_size=8)
    small = samples_per_map(tiny_pipeline, labels, 2, steps=3, seed=5, batch_size=2)
    assert big.shape == (3, 2, 1, 8, 16, 16)
    np.testing.assert_allclose(big, small, atol=1e-5)  # one model, other batch sizes: CPU kernels may round differently
    # sample k of a map is the plain pipeline call with generator seed + k
    one = tiny_pipeline(labels[1:2], num_inference_steps=3, generator=torch.Generator().manual_seed(6)).images
    np.testing.assert_allclose(big[1, 1], one[0], atol=1e-5)
    assert np.abs(big[:, 0] - big[:, 1]).max() > 1e-3  # negative control: two seeds differ


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--steps", "0"], "steps (--steps) must be a whole number >= 1, got 0"),
        (["--steps", "-3"], "steps (--steps) must be a whole number >= 1, got -3"),
        (["--guidance", "nan"], "guidance_scale (--guidance) must be a finite number, got nan"),
        (["--guidance", "inf"], "guidance_scale (--guidance) must be a finite number, got inf"),
        (["--labels-twice"], "would both be written as a_syn<k>.nii.gz"),
    ],
)
def test_cli_synthesize_refuses_bad_arguments_before_loading_the_pipeline(tmp_path, caplog, extra, message):
    affine = np.diag([5.5, 5.5, 6.0, 1.0])
    labels = tmp_path / "labels"
    _label_file(labels, "a.nii.gz", affine)
    if extra == ["--labels-twice"]:
        _label_file(labels, "a.nii", affine)  # two inputs, one output name
        extra = []
    code = cli.main(
        [
            "synthesize",
            "--pipeline",
            str(tmp_path / "no-pipeline"),
            "--labels",
            str(labels),
            "--out-dir",
            str(tmp_path / "out"),
        ]
        + extra
    )
    assert code == 2 and message in caplog.text
    assert "model_index.json" not in caplog.text and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--steps", "0"], "steps (--steps) must be a whole number >= 1, got 0"),
        (["--guidance", "nan"], "guidance_scale (--guidance) must be a finite number, got nan"),
        (["--n-test", "-1"], "n_test (--n-test) must be >= 1, got -1"),
        (["--judge-steps", "0"], "judge_steps (--judge-steps) must be >= 1, got 0"),
        (["--judge-seeds", "0"], "judge_seeds (--judge-seeds) must be >= 1, got 0"),
    ],
)
def test_cli_evaluate_refuses_bad_arguments_before_any_work(tmp_path, caplog, extra, message):
    """Issue 25 (Build: CLI values checked before any work): `medlsdm evaluate` refuses them
    before the pipeline loads, the run directory is taken or a sample folder is made."""
    run = tmp_path / "run"
    run.mkdir()
    assert cli.main(["evaluate", "--run-dir", str(run), "--profile", "smoke"] + extra) == 2
    assert message in caplog.text and "no trained pipeline" not in caplog.text
    assert list(run.iterdir()) == []


def test_synthesize_files_refuses_bad_arguments(tiny_pipeline, tmp_path):
    label = _label_file(tmp_path / "labels", "a.nii.gz", np.diag([5.5, 5.5, 6.0, 1.0]))
    for kwargs, message in [
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"guidance_scale": float("nan")}, "guidance"),
    ]:
        with pytest.raises(ConfigError, match=message):
            synthesize_files(tiny_pipeline, label, tmp_path / "out", **{"steps": 2, **kwargs})
    with pytest.raises(DataError, match="a.nii.gz and .*a.nii.gz would both be written"):
        synthesize_files(tiny_pipeline, [label, label], tmp_path / "out", steps=2)
    assert not (tmp_path / "out").exists()
