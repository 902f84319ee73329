"""Whole-volume synthesis in overlapping depth windows: where the windows lie and how they are
weighted, the averaged prediction against a hand computation, one window = one pass, deep label
maps keep their depth and affine, the UNet and decoder only ever see windows, block_shape."""

import json

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from medlsdm.data.io import write_nifti
from medlsdm.errors import ConfigError
from medlsdm.models.unet import SemanticUNet, SemanticUNetOutput
from medlsdm.pipelines.pipeline_medlsdm import MedLSDMPipeline
from medlsdm.pipelines.windows import blend_windows, tiled, window_starts, window_weights

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is faster

BLOCK = 8  # label-map depth of the tiny pipeline's "training block": latent depth 2, UNet downsampling 2


@pytest.fixture
def pipe(tiny_pipeline):
    tiny_pipeline.scheduler = DDIMScheduler.from_config(tiny_pipeline.scheduler.config)
    return tiny_pipeline


def deep_labels(depth, seed=1):
    return torch.randint(0, 3, (1, depth, 16, 16), generator=torch.Generator().manual_seed(seed))


def run(pipe, labels, **kw):
    kw.setdefault("num_inference_steps", 3)
    return pipe(labels, generator=torch.Generator().manual_seed(0), **kw)


def test_window_starts_and_weights():
    assert window_starts(14, 6, 2) == [0, 4, 8]
    assert window_starts(12, 6, 2) == [0, 4, 6]  # the last window moved back to end at the last slice
    assert window_starts(6, 8, 2) == [0] and window_starts(8, 8, 2) == [0]
    with pytest.raises(ConfigError, match="overlap"):
        window_starts(14, 6, 6)
    first, middle, last = window_weights([0, 4, 8], 6, 2, 14)
    third = 1 / 3
    np.testing.assert_allclose(first, [1, 1, 1, 1, 2 * third, third])  # no ramp at the volume's start
    np.testing.assert_allclose(middle, [third, 2 * third, 1, 1, 2 * third, third])
    np.testing.assert_allclose(last, [third, 2 * third, 1, 1, 1, 1])
    # regular neighbours' ramps sum to 1; the blend of a constant is that constant
    parts = [torch.full((1, 1, 6, 2, 2), 3.0) for _ in range(3)]
    torch.testing.assert_close(
        blend_windows(parts, [0, 4, 8], [first, middle, last], 14), torch.full((1, 1, 14, 2, 2), 3.0)
    )


def test_tiled_with_identity_and_upsampling_returns_the_whole():
    x = torch.randn(2, 3, 20, 4, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(tiled(lambda a, b: x[:, :, a:b], 20, 6, 2), x)
    up = torch.nn.functional.interpolate(x, scale_factor=(4, 1, 1))
    torch.testing.assert_close(
        tiled(lambda a, b: torch.nn.functional.interpolate(x[:, :, a:b], scale_factor=(4, 1, 1)), 20, 6, 2, scale=4), up
    )
    calls = []
    tiled(lambda a, b: calls.append((a, b)) or x[:, :, a:b], 20, None, 0)
    assert calls == [(0, 20)]


class DepthPositionUNet(SemanticUNet):
    """A toy denoiser with a closed form: its prediction at a latent slice is that slice's index
    *within the window it was given* (+ 1 for the null condition), so averaging over windows
    is visible and can be computed by hand. Records the input shapes."""

    def forward(self, sample, timestep, condition, return_dict=True):
        self.seen.append(tuple(sample.shape))
        position = torch.arange(sample.shape[2], dtype=sample.dtype).view(1, 1, -1, 1, 1)
        null = condition[:, -1:].mean(dim=(2, 3, 4), keepdim=True)  # 1 for the null condition, 0 otherwise
        return SemanticUNetOutput(sample=(position + null).expand_as(sample).contiguous())


def toy_pipeline(pipe):
    unet = DepthPositionUNet.from_config(pipe.unet.config)
    unet.seen = []
    toy = MedLSDMPipeline(pipe.vqgan, unet, DDIMScheduler.from_config(pipe.scheduler.config))
    toy.set_progress_bar_config(disable=True)
    return toy


@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_window_average_equals_the_hand_computation(pipe, guidance_scale):
    toy = toy_pipeline(pipe)
    labels = deep_labels(56)  # latent depth 14; window 24 label slices = 6 latent, overlap 8 = 2 latent: starts 0, 4, 8
    noise = torch.randn(1, 4, 14, 4, 4, generator=torch.Generator().manual_seed(3))
    out = toy(
        labels,
        num_inference_steps=1,
        latents=noise,
        output_type="latent",
        window=24,
        overlap=8,
        guidance_scale=guidance_scale,
        window_batch_size=2,
    ).images
    # by hand: each slice's position in its window(s), weights 1/3, 2/3 on the ramps
    expected = torch.tensor(
        [
            0,
            1,
            2,
            3,
            2 / 3 * 4 + 1 / 3 * 0,
            1 / 3 * 5 + 2 / 3 * 1,
            2,
            3,
            2 / 3 * 4 + 1 / 3 * 0,
            1 / 3 * 5 + 2 / 3 * 1,
            2,
            3,
            4,
            5,
        ]
    )
    if guidance_scale != 1.0:  # uncond + s (cond - uncond) = position + 1 - s
        expected = expected + 1 - guidance_scale
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(1)
    pred = expected.view(1, 1, 14, 1, 1).expand_as(noise)
    torch.testing.assert_close(out, scheduler.step(pred, scheduler.timesteps[0], noise).prev_sample)
    # three windows in UNet calls of 2 and 1 windows (× 2 with guidance), each 6 latent slices deep
    doubled = 2 if guidance_scale != 1.0 else 1
    assert toy.unet.seen == [(2 * doubled, 4, 6, 4, 4), (1 * doubled, 4, 6, 4, 4)]


def test_window_covering_the_depth_equals_one_pass(pipe):
    labels = deep_labels(24)
    one_pass = run(pipe, labels, output_type="pt", guidance_scale=2.0).images
    whole_window = run(pipe, labels, output_type="pt", guidance_scale=2.0, window=32).images
    torch.testing.assert_close(whole_window, one_pass, atol=1e-6, rtol=0)
    windowed = run(pipe, labels, output_type="pt", guidance_scale=2.0, window=BLOCK).images
    assert windowed.shape == one_pass.shape and windowed.abs().max() <= 1
    assert not torch.allclose(windowed, one_pass, atol=1e-3)  # negative control: windows are another computation


def test_three_blocks_deep_gives_that_depth_with_its_affine(pipe, tmp_path):
    affine = np.diag([5.5, 5.5, 6.0, 1.0])
    affine[:3, 3] = [-40, 12, 7]
    path = write_nifti(tmp_path / "deep.nii.gz", deep_labels(3 * BLOCK)[0].numpy(), affine, kind="label")
    seen_unet, seen_decoder = [], []
    hooks = [
        pipe.unet.register_forward_pre_hook(lambda m, args: seen_unet.append(args[0].shape[2])),
        pipe.vqgan.decoder.register_forward_pre_hook(lambda m, args: seen_decoder.append(args[0].shape[2])),
    ]
    try:
        out = run(pipe, path, window=BLOCK, overlap=4, guidance_scale=2.0)
    finally:
        for hook in hooks:
            hook.remove()
    assert out.images.shape == (1, 1, 3 * BLOCK, 16, 16) and np.isfinite(out.images).all()
    np.testing.assert_allclose(out.affines[0], affine, atol=1e-5)
    # bounded memory: the UNet and the decoder only ever see one window's depth (2 latent slices)
    assert set(seen_unet) == {2} and set(seen_decoder) == {2}
    assert len(seen_decoder) == len(window_starts(6, 2, 1))


def test_window_arguments_are_checked(pipe):
    labels = deep_labels(24)
    with pytest.raises(ConfigError, match="window=12 .*multiple of 8"):
        run(pipe, labels, window=12)
    with pytest.raises(ConfigError, match="overlap=2 .*multiple of 4"):
        run(pipe, labels, window=8, overlap=2)
    with pytest.raises(ConfigError, match="overlap=8 .*less than the window"):
        run(pipe, labels, window=8, overlap=8)
    with pytest.raises(ConfigError, match="window_batch_size"):
        run(pipe, labels, window=8, window_batch_size=0)


def test_block_shape_is_saved_and_old_pipelines_load_without_it(pipe, tmp_path):
    with_block = MedLSDMPipeline(
        pipe.vqgan, pipe.unet, pipe.scheduler, spacing=[6.0, 5.5, 5.5], block_shape=(8, 16, 16)
    )
    with_block.save_pretrained(tmp_path / "new")
    assert MedLSDMPipeline.from_pretrained(tmp_path / "new").config.block_shape == [8, 16, 16]
    with_block.save_pretrained(tmp_path / "old")
    index = tmp_path / "old" / "model_index.json"
    config = json.loads(index.read_text())
    del config["block_shape"]
    index.write_text(json.dumps(config))
    assert MedLSDMPipeline.from_pretrained(tmp_path / "old").config.block_shape is None
