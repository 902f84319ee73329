"""MedLSDMPipeline: every listed scheduler on 5-D latents, save/load, guidance, label checks."""
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

from medlsdm.data.io import write_nifti
from medlsdm.errors import DataError
from medlsdm.pipeline import MedLSDMPipeline

SCHEDULERS = [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler]


@pytest.fixture
def pipe(tiny_pipeline):
    return tiny_pipeline


@pytest.fixture
def labels():
    return torch.randint(0, 3, (2, 8, 16, 16), generator=torch.Generator().manual_seed(1))


def run(pipe, labels, **kw):
    kw.setdefault("num_inference_steps", 4)
    return pipe(labels, generator=torch.Generator().manual_seed(0), **kw)


@pytest.mark.parametrize("scheduler_cls", SCHEDULERS)
def test_every_scheduler_on_5d_latents(pipe, labels, scheduler_cls):
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    seen = []
    out = run(pipe, labels, guidance_scale=2.0, callback=lambda i, t, z: seen.append((i, z.shape)))
    assert out.images.shape == (2, 1, 8, 16, 16) and out.images.dtype == np.float32
    assert np.abs(out.images).max() <= 1 and np.isfinite(out.images).all()
    assert [i for i, _ in seen] == list(range(len(pipe.scheduler.timesteps)))
    assert seen[0][1] == (2, 4, 2, 4, 4)  # 5-D latents: (B, C, d, h, w)
    np.testing.assert_array_equal(run(pipe, labels, guidance_scale=2.0).images, out.images)  # same pipeline, same seed: exact


def test_save_load_same_volume(pipe, labels, tmp_path):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.save_pretrained(tmp_path)
    loaded = MedLSDMPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.scheduler, DDIMScheduler)
    assert loaded.config.latent_scale == pytest.approx(0.7) and list(loaded.config.spacing) == [6.0, 5.5, 5.5]
    # two pipelines with the same weights and noise: float32 rounding only (CPU kernels may sum
    # in another order, Intel and AMD differ in the last bits); images are in [-1, 1]
    np.testing.assert_allclose(run(loaded, labels).images, run(pipe, labels).images, atol=1e-4, rtol=0)


def test_guidance_changes_the_output(pipe, labels):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    cond_only = run(pipe, labels, guidance_scale=1.0).images
    uncond = run(pipe, labels, guidance_scale=0.0).images
    guided = run(pipe, labels, guidance_scale=3.0).images
    assert not np.allclose(cond_only, uncond) and not np.allclose(guided, cond_only)


def test_num_per_label_and_output_types(pipe, labels):
    out = run(pipe, labels[:1], num_per_label=3, output_type="pt")
    assert isinstance(out.images, torch.Tensor) and out.images.shape[0] == 3
    assert out.labels.shape == (3, 8, 16, 16)
    assert not torch.allclose(out.images[0], out.images[1])  # different noise per sample


def test_nifti_labels_keep_affine(pipe, labels, tmp_path):
    affine = np.diag([5.5, 5.5, 6.0, 1.0])
    affine[:3, 3] = [-40, 12, 7]
    path = write_nifti(tmp_path / "lab.nii.gz", labels[0].numpy(), affine, kind="label")
    out = run(pipe, path)
    np.testing.assert_allclose(out.affines[0], affine, atol=1e-5)
    np.testing.assert_array_equal(out.labels[0], labels[0].numpy())


def test_labels_that_do_not_fit_are_refused(pipe, tmp_path):
    with pytest.raises(DataError, match="class indices"):
        run(pipe, torch.full((8, 16, 16), 5))
    with pytest.raises(DataError, match="divisible"):
        run(pipe, torch.zeros(6, 16, 16, dtype=torch.long))
    with pytest.raises(DataError, match="3-D"):
        run(pipe, torch.zeros(1, 1, 8, 16, 16, dtype=torch.long)[0, 0, 0])
    path = write_nifti(tmp_path / "coarse.nii.gz", np.zeros((8, 16, 16), np.uint8), np.diag([11.0, 11.0, 12.0, 1.0]), kind="label")
    with pytest.raises(DataError, match="coarse.nii.gz.*spacing"):
        run(pipe, path)
    with pytest.raises(DataError, match="integer"):
        run(pipe, np.full((8, 16, 16), 0.5))
