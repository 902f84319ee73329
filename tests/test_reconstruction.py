"""Latent ablation and the painting baselines (medlsdm.evaluation.reconstruction), with controls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlsdm.errors import DataError, MedLSDMError
from medlsdm.evaluation.reconstruction import (
    baseline_sentence,
    body_masks,
    evaluate_reconstruction,
    latent_ablation,
    naive_baseline,
    painting_baselines,
    reconstruct,
    reconstruction_vs_baselines,
)
from medlsdm.metrics.conditional import class_means
from medlsdm.metrics.image import psnr
from medlsdm.models import VQGAN
from medlsdm.training.datasets import ArrayStore
from medlsdm.training.vqgan import drop_labels, load_vqgan, train_vqgan

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(
    crop_shape=(8, 8, 8),
    batch_size=4,
    channels=(8, 8),
    num_embeddings=16,
    embedding_dim=4,
    norm_num_groups=4,
    restart_after=2,
    progress=False,
    lr=1e-2,
    warmup_steps=2,
)


def _cases(n=4, seed=0):
    """Label maps with a body (1) and an organ (2); each case's tissue has its own intensity
    (a contrast factor), which the label map does not tell."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        lab = np.zeros((8, 8, 8), np.int64)
        lab[:, 1:7, 1:7] = 1
        lab[2:6, 2:6, 2:6] = 2
        img = np.where(lab == 0, -1.0, -0.6 + 1.2 * i / (n - 1)) + np.where(lab == 2, 0.3, 0.0)
        images.append((img + rng.normal(0, 0.01, img.shape))[None].astype(np.float32))
        labels.append(lab)
    return np.stack(images), np.stack(labels)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    images, labels = _cases()
    store = ArrayStore({f"c{i}": (images[i], labels[i], np.eye(4)) for i in range(len(images))})
    run = tmp_path_factory.mktemp("vq")
    train_vqgan(run, store=store, split={"train": list(store)}, steps=300, decoder_type="normal", **TINY)
    return load_vqgan(run), images, labels


def test_latent_ablation_separates_a_decoder_that_uses_its_latent_from_one_that_does_not(trained):
    model, images, labels = trained
    res = latent_ablation(model, images, labels, masks=body_masks(labels))
    assert res["own"] - res["other"] >= 3.0, res  # positive control: the case's contrast lives in the latent
    assert len(res["per_case"]["own"]) == len(images)
    blind = type(model).from_config(model.config)
    blind.load_state_dict(model.state_dict())
    with torch.no_grad():
        blind.decoder.conv_in.weight.zero_()  # a decoder fed zeros for its latent
    res0 = latent_ablation(blind, images, labels, masks=body_masks(labels))
    assert abs(res0["own"] - res0["other"]) < 1e-6 and abs(res0["own"] - res0["random"]) < 1e-6  # fails the 3 dB bar
    with pytest.raises(DataError, match="two cases"):
        latent_ablation(model, images[:1], labels[:1])


def test_painting_baselines_closed_form():
    images, labels = _cases()
    means = class_means(list(images), list(labels), num_classes=3)
    out = painting_baselines(images, labels, means, factor=2)
    assert np.allclose(out["painting"][:, 0], means[labels])
    # an image that is exactly its painting: the pooled residual is zero, both baselines are exact
    painted = out["painting"]
    exact = painting_baselines(painted, labels, means, factor=2)
    assert np.allclose(exact["painting + pooled residual"], painted, atol=1e-6)
    # a residual constant per 2x2x2 block is recovered exactly by painting + pooled residual
    # only where the upsampling is exact (constant residual everywhere)
    shifted = painted + 0.1
    assert np.allclose(
        painting_baselines(shifted, labels, means, factor=2)["painting + pooled residual"], shifted, atol=1e-6
    )


def test_reconstruction_vs_baselines_table(trained):
    model, images, labels = trained
    means = class_means(list(images), list(labels), num_classes=3)
    table = reconstruction_vs_baselines(model, images, labels, means)
    assert set(table) == {"VQ-GAN", "average-pool", "painting", "painting + pooled residual"}
    # painting cannot know each case's organ intensity; the pooled residual adds it back
    assert table["painting + pooled residual"]["psnr"] > table["painting"]["psnr"]
    assert len(table["VQ-GAN"]["per_case"]["psnr"]) == len(images)
    assert "noise_ratio" not in table["VQ-GAN"]  # texture only when asked for
    textured = reconstruction_vs_baselines(model, images, labels, means, noise_classes=[1, 2])
    assert all({"noise_ratio", "hf_power_ratio"} <= set(r) for r in textured.values())
    assert textured["painting"]["psnr"] == table["painting"]["psnr"]


def test_painting_plus_pooled_residual_has_no_texture():
    """A reconstruction without noise (painting + pooled residual: painted classes plus a smooth correction)
    fails the noise ratio against originals that carry noise; the originals against themselves give 1."""
    from medlsdm.metrics.texture import texture_ratios

    rng = np.random.default_rng(0)
    labels = np.zeros((2, 16, 32, 32), np.int64)
    labels[:, :, 2:30, 2:30] = 1
    labels[:, :, 6:24, 6:20] = 2
    images = (np.choose(labels, [-1.0, 0.05, 0.2]) + rng.normal(0, 0.02, labels.shape))[:, None].astype(np.float32)
    means = class_means(list(images), list(labels), num_classes=3)
    smooth = painting_baselines(images, labels, means)["painting + pooled residual"]
    ratios = texture_ratios(list(smooth), list(labels), list(images), list(labels), [1, 2])
    assert ratios["noise_ratio"] < 0.1
    # its painted edges are the label map's, as sharp as the originals': the power above half Nyquist
    # keeps part of the originals' (edges and noise), the noise level sees the loss alone
    assert ratios["noise_ratio"] < ratios["hf_power_ratio"] < 1
    assert texture_ratios(list(images), list(labels), list(images), list(labels), [1, 2])["noise_ratio"] == 1.0


def test_baseline_sentence_follows_the_numbers():
    base = {"psnr": 25.56, "ssim": 0.784}
    both = baseline_sentence({"VQ-GAN": {"psnr": 27.05, "ssim": 0.797}, "painting + pooled residual": base})
    assert "VQ-GAN beats painting + pooled residual" in both and "PSNR 27.05 > 25.56" in both
    one = baseline_sentence(
        {
            "VQ-GAN": {"psnr": 26.40, "ssim": 0.728, "noise_ratio": 0.57, "hf_power_ratio": 0.74},
            "painting + pooled residual": base,
        }
    )
    assert "does not beat" in one and "SSIM 0.728 ≤ 0.784" in one
    assert "0.57× the originals' noise level (below 0.7–1.3)" in one and "(inside 0.5–2.0)" in one
    nan = baseline_sentence({"VQ-GAN": {"psnr": 27.0, "ssim": float("nan")}, "painting + pooled residual": base})
    assert "does not beat" in nan  # no SSIM, no claim


def test_drop_labels_zeroes_whole_maps():
    labels = torch.randint(0, 3, (64, 4, 4, 4))
    out = drop_labels(labels, 3, 0.5, torch.Generator().manual_seed(0))
    per_sample = out.sum(dim=(1, 2, 3, 4))
    dropped = per_sample == 0
    assert 16 < int(dropped.sum()) < 48  # about half
    assert torch.equal(per_sample[~dropped], torch.full_like(per_sample[~dropped], 64.0))  # one-hot kept
    assert drop_labels(labels, 3, 0.0, torch.Generator()).sum() == labels.numel()


def test_naive_baseline():
    x = torch.full((1, 1, 8, 8, 8), 0.25)
    assert torch.allclose(naive_baseline(x), x)
    rng = torch.Generator().manual_seed(0)
    v = torch.rand(2, 1, 8, 12, 16, generator=rng)
    b = naive_baseline(v)
    assert b.shape == v.shape
    assert torch.allclose(torch.nn.functional.avg_pool3d(b, 4).mean(), v.mean(), atol=1e-2)
    assert naive_baseline(torch.rand(1, 1, 8, 8)).shape == (1, 1, 8, 8)
    with pytest.raises(DataError, match="divisible by 4"):
        naive_baseline(torch.zeros(1, 1, 8, 8, 10))


def test_evaluate_reconstruction(tmp_path):
    rng = np.random.default_rng(0)
    store = ArrayStore()
    for i in range(2):
        label = rng.integers(0, 3, (12, 16, 14))  # 14: not divisible by 4 → padded and cropped back
        image = (label - 1.0 + rng.normal(0, 0.05, label.shape)).clip(-1, 1).astype(np.float32)[None]
        store[f"c{i}"] = (image, label, np.eye(4))
    torch.manual_seed(0)
    model = VQGAN(
        channels=(8, 8, 8), num_embeddings=8, embedding_dim=4, norm_num_groups=4, decoder_type="spade", num_classes=3
    )
    codebook = model.quantizer.codebook.clone()
    res = evaluate_reconstruction(model, store, ["c0", "c1"])
    assert torch.equal(model.quantizer.codebook, codebook) and model.training  # untouched
    assert set(res) >= {"psnr", "ssim", "baseline_psnr", "baseline_ssim", "psnr_gain", "usage", "perplexity"}
    assert res["n_cases"] == 2 and set(res["per_case"]) == {"c0", "c1"}
    image = torch.tensor(store["c0"][0])[None]
    padded = torch.nn.functional.pad(image, (0, 2, 0, 0, 0, 0), mode="replicate")
    expected = psnr(naive_baseline(padded)[..., :14], image, data_range=2.0)
    assert res["per_case"]["c0"]["baseline_psnr"] == pytest.approx(expected)
    assert res["psnr_gain"] == pytest.approx(res["psnr"] - res["baseline_psnr"])
    assert 0 < res["usage"] <= 1 and 1 <= res["perplexity"] <= 8
    with pytest.raises(DataError):
        evaluate_reconstruction(model, store, [])


def test_reconstruct_2d_slices_against_the_model_by_hand():
    """Batched reconstruction equals encode → nearest codes → decode of each slice, padded
    (14 → 16) and cropped back; the codebook and the model's mode are left alone."""
    from medlsdm.models import VQGAN

    torch.manual_seed(0)
    model = VQGAN(2, channels=(8, 8, 8), num_embeddings=16, embedding_dim=4, norm_num_groups=4).train()
    codebook = model.quantizer.codebook.clone()
    images = np.random.default_rng(3).uniform(-1, 1, (5, 1, 12, 14)).astype(np.float32)
    out = reconstruct(model, images, batch_size=2)
    assert model.training and torch.equal(model.quantizer.codebook, codebook)
    assert out.images.shape == images.shape and out.images.dtype == np.float32 and out.indices.shape == (5, 3, 4)
    model.eval()
    with torch.no_grad():
        x = torch.nn.functional.pad(torch.tensor(images), (0, 2, 0, 0), mode="replicate")
        zq, idx, _ = model.quantize(model.encode(x).latents, update=False)
        ref = model.decode(zq, force_not_quantize=True).sample[..., :14].clamp(-1, 1).numpy()
    np.testing.assert_allclose(out.images, ref, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(out.indices, idx.numpy())
    assert np.abs(out.images - images).max() > 0.1  # an untrained model: not the identity


def test_reconstruct_spade_needs_and_uses_the_label_maps():
    from medlsdm.models import VQGAN

    torch.manual_seed(0)
    model = VQGAN(
        3, channels=(8, 8), num_embeddings=8, embedding_dim=4, norm_num_groups=4, decoder_type="spade", num_classes=3
    )
    rng = np.random.default_rng(4)
    images = [rng.uniform(-1, 1, (1, 4, 6, 5)).astype(np.float32)]  # 5: padded to 6
    labels = [rng.integers(0, 3, (4, 6, 5))]
    a = reconstruct(model, images, labels).images
    b = reconstruct(model, images, [(labels[0] + 1) % 3]).images
    assert a.shape == (1, 1, 4, 6, 5) and np.abs(a - b).max() > 1e-4  # the decoder reads the labels
    np.testing.assert_allclose(reconstruct(model, images, labels).images, a, rtol=0, atol=0)
    with pytest.raises(MedLSDMError, match="SPADE"):
        reconstruct(model, images)
