"""Editing real volumes: ``pipe.edit`` keeps the volume outside the mask (exactly, beyond the soft
border), equals plain synthesis with a full mask, replaces the latent outside the mask by the real
latent noised to the next timestep; the mask and paste helpers and ``insert_lesion``."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor

from medlsdm.errors import ConfigError, DataError
from medlsdm.pipelines.editing import insert_lesion, latent_mask, soft_weight

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is faster

SHAPE = (8, 16, 16)


@pytest.fixture
def pipe(tiny_pipeline):
    tiny_pipeline.scheduler = DDIMScheduler.from_config(tiny_pipeline.scheduler.config)
    return tiny_pipeline


@pytest.fixture
def labels():
    return torch.randint(0, 3, (1, *SHAPE), generator=torch.Generator().manual_seed(1))


@pytest.fixture
def image():
    """A "real" volume in [-1, 1] (any volume will do: the model is untrained)."""
    return torch.rand(1, 1, *SHAPE, generator=torch.Generator().manual_seed(2)) * 2 - 1


def edit(pipe, image, labels, mask, **kw):
    kw.setdefault("num_inference_steps", 3)
    return pipe.edit(image, labels, mask, generator=torch.Generator().manual_seed(0), output_type="pt", **kw).images


def box_mask():
    mask = torch.zeros(1, *SHAPE, dtype=torch.bool)
    mask[:, 2:5, 6:9, 6:9] = True
    return mask


def test_empty_mask_returns_the_input_exactly(pipe, image, labels):
    out = edit(pipe, image, labels, torch.zeros(SHAPE, dtype=torch.bool))
    assert torch.equal(out, image)


@pytest.mark.parametrize("scheduler_cls", [DDIMScheduler, DDPMScheduler])  # DDPM: stochastic steps, same generator
def test_full_mask_equals_plain_synthesis(pipe, image, labels, scheduler_cls):
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    out = edit(pipe, image, labels, torch.ones(SHAPE, dtype=torch.bool), guidance_scale=2.0)
    plain = pipe(
        labels, num_inference_steps=3, guidance_scale=2.0, generator=torch.Generator().manual_seed(0), output_type="pt"
    ).images
    torch.testing.assert_close(out, plain, atol=1e-6, rtol=0)  # the same operations: equal up to float rounding


def test_outside_the_soft_border_is_the_input(pipe, image, labels):
    mask = box_mask()
    out = edit(pipe, image, labels, mask, soft_border=2)
    weight = soft_weight(mask, 2)
    outside, inside = weight == 0, mask[:, None]
    assert (out - image)[outside].abs().max() <= 1e-4  # in fact 0: (1 - 0) · image + 0 · synthesis
    assert (out - image)[inside].abs().mean() > 1e-2  # negative control: inside it is synthesised
    border = (weight > 0) & (weight < 1)
    assert border.any() and not (border & inside).any()  # the soft border lies outside the mask


def test_edit_in_windows_keeps_the_outside(pipe):
    labels = torch.randint(0, 3, (1, 24, 16, 16), generator=torch.Generator().manual_seed(4))
    image = torch.rand(24, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    mask = torch.zeros(24, 16, 16, dtype=torch.bool)
    mask[10:14, 4:8, 4:8] = True
    out = edit(pipe, image.numpy(), labels, mask.numpy(), window=8)
    assert out.shape == (1, 1, 24, 16, 16)
    outside = soft_weight(mask[None], 4) == 0
    assert torch.equal(out[outside], image[None, None].expand_as(out)[outside])


def test_the_latent_outside_is_the_real_one_noised_to_the_next_timestep(pipe, image, labels):
    """DDIM (``scale_model_input`` is the identity): the UNet's input at step i, outside the
    dilated latent mask, is the real latent noised to timestep i by the closed form
    ``sqrt(ᾱ_t) z + sqrt(1 − ᾱ_t) ε`` with the initial noise ε; what is decoded there is the
    real latent itself."""
    mask = box_mask()
    seen_unet, seen_decode = [], []
    hooks = [
        pipe.unet.register_forward_pre_hook(lambda m, args: seen_unet.append((args[0].clone(), int(args[1])))),
        pipe.vqgan.quantizer.register_forward_pre_hook(lambda m, args: seen_decode.append(args[0].clone())),
    ]
    try:
        edit(pipe, image, labels, mask, num_inference_steps=4, dilate=0)
    finally:
        for hook in hooks:
            hook.remove()
    with torch.no_grad():
        z = pipe.vqgan.encode(image).latents
    scale = pipe.vqgan.config.scaling_factor
    noise = randn_tensor(z.shape, generator=torch.Generator().manual_seed(0))
    outside = ~latent_mask(mask, 4, dilate=0).expand_as(z)
    alphas = pipe.scheduler.alphas_cumprod
    assert [t for _, t in seen_unet] == pipe.scheduler.timesteps.tolist()
    for x, t in seen_unet:
        expected = alphas[t].sqrt() * z * scale + (1 - alphas[t]).sqrt() * noise
        torch.testing.assert_close(x[outside], expected[outside], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(seen_decode[-1][outside], z[outside], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(seen_decode[-1][~outside], z[~outside], atol=1e-3)  # inside: synthesised


def test_latent_mask_and_soft_weight_closed_form():
    mask = torch.zeros(1, 16, 16, 16, dtype=torch.bool)
    mask[0, 5, 5, 5] = True
    on_grid = latent_mask(mask, 4, dilate=0)
    assert on_grid.shape == (1, 1, 4, 4, 4) and on_grid.sum() == 1 and on_grid[0, 0, 1, 1, 1]
    grown = latent_mask(mask, 4, dilate=1)
    assert grown.sum() == 27 and grown[0, 0, :3, :3, :3].all()
    weight = soft_weight(mask, 3)[0, 0]
    assert weight[5, 5, 5] == 1
    np.testing.assert_allclose([weight[5, 5, 5 + d] for d in range(1, 6)], [0.75, 0.5, 0.25, 0, 0])
    assert weight[6, 6, 5] == pytest.approx(1 - np.sqrt(2) / 4)  # Euclidean distance
    assert soft_weight(torch.zeros(1, 4, 4, 4, dtype=torch.bool), 3).abs().max() == 0


def test_insert_lesion_geometry():
    labels = np.zeros((20, 30, 30), np.int64)
    labels[2:18, 5:25, 5:25] = 2  # the organ
    new, mask = insert_lesion(labels, (10, 15, 15), 3, organ_class=2, lesion_class=5)
    d, h, w = np.nonzero(mask)
    assert np.all((d - 10) ** 2 + (h - 15) ** 2 + (w - 15) ** 2 <= 9)
    assert mask.sum() == sum(
        1 for i in range(-3, 4) for j in range(-3, 4) for k in range(-3, 4) if i * i + j * j + k * k <= 9
    )
    assert np.array_equal(new == 5, mask) and np.array_equal(new[~mask], labels[~mask])
    # clipped to the organ: a lesion at its edge keeps to it
    _, edge = insert_lesion(labels, (3, 15, 15), 3, organ_class=2, lesion_class=5)
    assert edge.any() and np.all(labels[edge] == 2) and edge[:2].sum() == 0
    # anisotropic radius (d, h, w)
    _, flat = insert_lesion(labels, (10, 15, 15), (1, 4, 4), organ_class=2, lesion_class=5)
    assert np.ptp(np.nonzero(flat)[0]) == 2 and np.ptp(np.nonzero(flat)[1]) == 8
    with pytest.raises(ConfigError, match=r"\(0, 0, 0\) is not inside the organ \(class 2\).*class 0"):
        insert_lesion(labels, (0, 0, 0), 3, organ_class=2, lesion_class=5)
    with pytest.raises(ConfigError, match="not a voxel"):
        insert_lesion(labels, (25, 15, 15), 3, organ_class=2, lesion_class=5)


def test_edit_inputs_are_checked(pipe, image, labels):
    with pytest.raises(DataError, match="image of shape"):
        edit(pipe, image[:, :, :4], labels, box_mask())
    with pytest.raises(DataError, match="mask of shape"):
        edit(pipe, image, labels, box_mask()[:, :4])
    with pytest.raises(ConfigError, match="dilate"):
        edit(pipe, image, labels, box_mask(), dilate=-1)
