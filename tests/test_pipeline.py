"""MedLSDMPipeline: every listed scheduler on 5-D latents, save/load, guidance, label checks,
initial latents, latent output and step-end callbacks."""

import json

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler
from diffusers.utils.torch_utils import randn_tensor
from safetensors.torch import load_file, save_file

from medlsdm.data.io import write_nifti
from medlsdm.errors import ConfigError, DataError
from medlsdm.models.unet import null_condition, semantic_condition
from medlsdm.pipelines.pipeline_medlsdm import MedLSDMPipeline

LATENT_SHAPE = (2, 4, 2, 4, 4)  # latents of the `labels` below: (B, C, d, h, w)

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

    def record(p, i, t, tensors):
        seen.append((i, int(t), tensors["latents"].shape))
        return {}

    out = run(pipe, labels, guidance_scale=2.0, callback_on_step_end=record)
    assert out.images.shape == (2, 1, 8, 16, 16) and out.images.dtype == np.float32
    assert np.abs(out.images).max() <= 1 and np.isfinite(out.images).all()
    assert [i for i, _, _ in seen] == list(range(len(pipe.scheduler.timesteps)))
    assert [t for _, t, _ in seen] == pipe.scheduler.timesteps.tolist()
    assert seen[0][2] == LATENT_SHAPE  # 5-D latents
    np.testing.assert_array_equal(run(pipe, labels, guidance_scale=2.0).images, out.images)  # same seed, same volume


def test_save_load_same_volume(pipe, labels, tmp_path):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.save_pretrained(tmp_path)
    loaded = MedLSDMPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.scheduler, DDIMScheduler)
    assert loaded.vqgan.config.scaling_factor == pytest.approx(0.7) and list(loaded.config.spacing) == [6.0, 5.5, 5.5]
    assert "latent_scale" not in json.loads((tmp_path / "model_index.json").read_text())
    # another instance, same weights: float32 results may differ in the last bits
    np.testing.assert_allclose(run(loaded, labels).images, run(pipe, labels).images, atol=1e-5, rtol=1e-4)


def _old_format(folder, num_groups=None):
    """Rewrite a saved pipeline as saved before the API renames: ``latent_scale`` in
    model_index.json, VQ-GAN config ``decoder`` and weights ``decoder_net.*``, UNet config
    ``num_groups``."""

    def rewrite(path, fn):
        config = json.loads(path.read_text())
        fn(config)
        path.write_text(json.dumps(config))

    def vqgan(config):
        config["decoder"] = config.pop("decoder_type")
        config.pop("scaling_factor")

    def unet(config):
        config["num_groups"] = config.pop("norm_num_groups") if num_groups is None else num_groups
        config.pop("norm_num_groups", None)

    rewrite(folder / "model_index.json", lambda config: config.update(latent_scale=0.7))
    rewrite(folder / "vqgan" / "config.json", vqgan)
    rewrite(folder / "unet" / "config.json", unet)
    weights = folder / "vqgan" / "diffusion_pytorch_model.safetensors"
    save_file({k.replace("decoder.", "decoder_net.", 1): v for k, v in load_file(weights).items()}, weights)


def test_pipeline_saved_in_the_old_format_samples_the_same(pipe, labels, tmp_path):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.save_pretrained(tmp_path / "old")
    _old_format(tmp_path / "old")
    with pytest.warns(FutureWarning, match="latent_scale"):
        old = MedLSDMPipeline.from_pretrained(tmp_path / "old")
    old.set_progress_bar_config(disable=True)
    assert old.vqgan.config.scaling_factor == pytest.approx(0.7) and old.vqgan.config.decoder_type == "spade"
    assert old.unet.config.norm_num_groups == 4 and "latent_scale" not in old.config
    np.testing.assert_allclose(run(old, labels).images, run(pipe, labels).images, atol=1e-5, rtol=1e-4)
    old.save_pretrained(tmp_path / "resaved")  # in the new format, without a warning
    assert "latent_scale" not in json.loads((tmp_path / "resaved" / "model_index.json").read_text())
    resaved = MedLSDMPipeline.from_pretrained(tmp_path / "resaved")
    assert resaved.vqgan.config.scaling_factor == pytest.approx(0.7)
    # negative: the old config's own values are honoured, not the defaults or the pipeline's
    pipe.save_pretrained(tmp_path / "other")
    _old_format(tmp_path / "other", num_groups=2)
    with pytest.warns(FutureWarning):
        other = MedLSDMPipeline.from_pretrained(tmp_path / "other")
    other.set_progress_bar_config(disable=True)
    assert other.unet.config.norm_num_groups == 2
    assert not np.allclose(run(other, labels).images, run(pipe, labels).images, atol=1e-3)


def _unet_batch_sizes(pipe, labels, **kw):
    sizes = []
    handle = pipe.unet.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    try:
        out = run(pipe, labels, output_type="pt", **kw)
    finally:
        handle.remove()
    return out.images, set(sizes)


def test_guidance_zero_runs_only_the_unconditional_branch(pipe, labels):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    uncond, sizes = _unet_batch_sizes(pipe, labels, guidance_scale=0.0)
    assert sizes == {2}  # no doubled batch
    assert _unet_batch_sizes(pipe, labels, guidance_scale=1.0)[1] == {2}
    assert _unet_batch_sizes(pipe, labels, guidance_scale=2.0)[1] == {4}
    # the formula it replaces: the doubled batch, uncond + 0 · (cond − uncond)
    cond = semantic_condition(labels, 3)
    latents = randn_tensor(LATENT_SHAPE, generator=torch.Generator().manual_seed(0))
    pipe.scheduler.set_timesteps(4)
    with torch.no_grad():
        for t in pipe.scheduler.timesteps:
            pred_cond, pred_uncond = pipe.unet(
                torch.cat([latents] * 2), t, torch.cat([cond, null_condition(cond)])
            ).sample.chunk(2)
            latents = pipe.scheduler.step(pred_uncond + 0.0 * (pred_cond - pred_uncond), t, latents).prev_sample
        doubled = pipe.decode_latents(latents, labels)
    # batch 2 vs batch 4 through the same weights: equal up to float32 rounding
    torch.testing.assert_close(uncond, doubled, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(uncond, run(pipe, labels, output_type="pt").images, atol=1e-3)  # not the conditional one


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
    with pytest.raises(ConfigError, match=r"output_type must be one of \['np', 'pt', 'latent'\], got 'pil'"):
        run(pipe, labels, output_type="pil")


def test_latent_output_decodes_to_the_volumes(pipe, labels):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    latent = run(pipe, labels, output_type="latent")
    assert isinstance(latent.images, torch.Tensor) and latent.images.shape == LATENT_SHAPE
    assert torch.equal(latent.labels, labels)
    volumes = run(pipe, labels, output_type="pt").images
    with torch.no_grad():
        torch.testing.assert_close(pipe.decode_latents(latent.images, labels), volumes, atol=1e-6, rtol=0)
        other = pipe.decode_latents(latent.images, (labels + 1) % 3)
    assert not torch.allclose(other, volumes, atol=1e-3)  # the SPADE decoder reads the label maps


def test_initial_latents(pipe, labels):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    noise = torch.randn(LATENT_SHAPE, generator=torch.Generator().manual_seed(5))
    first = pipe(labels, num_inference_steps=4, latents=noise, output_type="pt").images
    np.testing.assert_array_equal(
        pipe(labels, num_inference_steps=4, latents=noise.clone(), output_type="pt").images, first
    )
    assert not torch.allclose(
        first, pipe(labels, num_inference_steps=4, latents=-noise, output_type="pt").images, atol=1e-3
    )
    # the generator's own noise, given as latents, reproduces the generator's sample
    drawn = randn_tensor(LATENT_SHAPE, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(pipe(labels, num_inference_steps=4, latents=drawn).images, run(pipe, labels).images)
    with pytest.raises(ConfigError, match=r"latents of shape \(2, 4, 2, 4\) .*expected \(2, 4, 2, 4, 4\)"):
        pipe(labels, num_inference_steps=4, latents=noise[..., 0])
    with pytest.raises(ConfigError, match="expected"):
        pipe(labels, num_inference_steps=4, latents=noise, num_per_label=2)


def test_callback_on_step_end_can_replace_the_latents(pipe, labels):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    plain = run(pipe, labels, output_type="latent").images
    calls = []

    def observe(p, i, t, tensors):
        calls.append((p, i, sorted(tensors)))
        return {}

    np.testing.assert_array_equal(run(pipe, labels, output_type="latent", callback_on_step_end=observe).images, plain)
    assert calls == [(pipe, i, ["latents"]) for i in range(4)]

    def zero_at_the_end(p, i, t, tensors):
        return {"latents": torch.zeros_like(tensors["latents"])} if i == 3 else {}

    assert run(pipe, labels, output_type="latent", callback_on_step_end=zero_at_the_end).images.abs().max() == 0

    def halve(p, i, t, tensors):
        return {"latents": tensors["latents"] * 0.5}

    assert not torch.allclose(
        run(pipe, labels, output_type="latent", callback_on_step_end=halve).images, plain, atol=1e-3
    )
    with pytest.raises(ConfigError, match=r"callback_on_step_end_tensor_inputs must be among \['latents'\]"):
        run(pipe, labels, callback_on_step_end=observe, callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])


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
    path = write_nifti(
        tmp_path / "coarse.nii.gz", np.zeros((8, 16, 16), np.uint8), np.diag([11.0, 11.0, 12.0, 1.0]), kind="label"
    )
    with pytest.raises(DataError, match="coarse.nii.gz.*spacing"):
        run(pipe, path)
    with pytest.raises(DataError, match="integer"):
        run(pipe, np.full((8, 16, 16), 0.5))
