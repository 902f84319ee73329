"""Latent ablation and the painting baselines (medlsdm.evaluation.reconstruction), with controls."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medlsdm.errors import DataError
from medlsdm.evaluation.reconstruction import (
    baseline_sentence,
    body_masks,
    latent_ablation,
    painting_baselines,
    reconstruction_vs_baselines,
)
from medlsdm.metrics.conditional import class_means
from medlsdm.training.datasets import ArrayStore
from medlsdm.training.vqgan import drop_labels, load_vqgan, train_vqgan

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(crop_shape=(8, 8, 8), batch_size=4, channels=(8, 8), num_embeddings=16, embedding_dim=4,
            norm_num_groups=4, restart_after=2, progress=False, lr=1e-2, warmup_steps=2)


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
    assert np.allclose(painting_baselines(shifted, labels, means, factor=2)["painting + pooled residual"], shifted, atol=1e-6)


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
    one = baseline_sentence({"VQ-GAN": {"psnr": 26.40, "ssim": 0.728, "noise_ratio": 0.57, "hf_power_ratio": 0.74},
                             "painting + pooled residual": base})
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
